import torch
import torch.nn.functional as F

from cpcl.losses.contrastive import itc_loss, pair_positives, sdm_loss
from cpcl.losses.prototype import prototype_loss


def test_prototype_loss_ignores_outliers_and_has_gradients():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, -1, 2, 1])
    loss = prototype_loss(logits, labels)
    assert torch.allclose(loss, F.cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]]))
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    empty = prototype_loss(torch.randn(2, 3, requires_grad=True), torch.tensor([-1, -1]))
    assert empty.item() == 0.0 and empty.requires_grad


def test_pair_positives():
    image_index = torch.tensor([0, 0, 1, 2])
    y_img = torch.tensor([4, 4, -1, -1])
    y_txt = torch.tensor([-1, -1, 7, 7])
    pos = pair_positives(image_index, y_img, y_txt)
    assert pos.tolist() == [[True, True, False, False], [True, True, False, False],
                            [False, False, True, True], [False, False, True, True]]
    assert torch.equal(pair_positives(image_index), image_index[:, None] == image_index[None, :])


def test_sdm_is_zero_when_prediction_matches_and_has_gradients():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(5, 8), dim=-1).requires_grad_()
    t = F.normalize(torch.randn(5, 8), dim=-1).requires_grad_()
    pos = torch.eye(5, dtype=torch.bool)
    loss = sdm_loss(v, t, 0.02, pos)
    loss.backward()
    assert loss > 0 and v.grad.abs().sum() > 0
    same = F.normalize(torch.eye(4), dim=-1)
    assert sdm_loss(same, same, 0.001, torch.eye(4, dtype=torch.bool)) < 1e-4
    # a positive pair that the labels add lowers the loss when the features agree with it
    a = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]]), dim=-1)
    more = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert sdm_loss(a, a, 0.05, more) < sdm_loss(a, a, 0.05, torch.eye(3, dtype=torch.bool))
    assert itc_loss(a, a, 0.05) > 0
