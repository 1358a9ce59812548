"""The practitioner's path rehearsed end to end (``benchmarks/own_data_path.py``) on a tiny dataset with a random
micro CLIP, its commands through ``cpcl.cli.main`` in this process (``serve`` a process of its own): every
command exits 0; the file index, the Milvus server and the served page agree on the top-10;
the run from the exported weights starts from the trained network; with person_id added to the JSONL (two
persons merged at random) the sweep and the training choose alike and write the same best.pt."""

from __future__ import annotations

from benchmarks.own_data_path import rehearse

MICRO = ["model.arch=cpcl-vit-micro", "model.pretrained=null", "model.image_size=[64,32]", "train.epochs=2",
         "train.batch_size=16", "train.max_steps_per_epoch=2", "train.eval_batch_size=64"]


def test_the_practitioners_path_end_to_end(tmp_path, milvus_server):
    report = rehearse(tmp_path / "work", num_ids=24, sets=MICRO, held_out=8, grid="cluster.eps=0.5",
                      milvus_uri=milvus_server.uri, identity_runs=("merged",), in_process=True)
    assert report["failures"] == [], report["failures"]
    assert report["same_top10"] == {"served": True, "milvus": True}
    assert len(report["top10"]["files"]) == 10
    assert report["images"]["later"] > 0 and report["images"]["annotated"] > 40
    assert report["identity_runs_identical"] == {"merged": True}
    assert [t[1] for t in report["sweep"]["trials"]][-1].endswith("synthpedes_itc.yaml")  # the baseline is a trial
    assert report["selection"]["select_on"] == "label-free"
