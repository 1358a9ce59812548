import torch

from cpcl.views.figures import FRAME, GREEN, MARGIN, RED
from cpcl.views.rankings import pick_queries, ranking_rows


def test_rows_frame_correct_matches_green_and_wrong_ones_red(gallery):
    gallery_ids = torch.tensor([0, 1, 2, 1])
    paths = gallery[:4]
    # query 0 (person 1): ranks image 2 (wrong), then 1 (right); query 1 (person 2) ranks image 2 first
    sim = torch.tensor([[0.1, 0.5, 0.9, 0.2], [0.0, 0.1, 0.8, 0.3]])
    rows = ranking_rows(sim, ["q zero", "q one"], paths, torch.tensor([1, 2]), gallery_ids, [0, 1], k=3)
    (q0, row0, first0), (q1, _, first1) = rows
    assert (q0, first0, q1, first1) == (0, False, 1, True)
    top = row0.height - MARGIN - 20 - 160 - 2 * FRAME  # the frame's top edge, under the caption
    cell = (row0.width - 2 * MARGIN + 8) // 3
    assert row0.getpixel((MARGIN + 1, top + 1)) == RED
    assert row0.getpixel((MARGIN + cell + 1, top + 1)) == GREEN


def test_pick_queries_is_reproducible_and_distinct():
    assert pick_queries(100, 5, seed=1) == pick_queries(100, 5, seed=1)
    assert len(set(pick_queries(100, 50))) == 50 and pick_queries(3, 10) == [0, 1, 2]
