import torch
import torch.nn.functional as F

from cpcl.memory.prototypes import PrototypeMemory


def test_reset_is_normalised_cluster_means():
    mem = PrototypeMemory(2)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    mem.reset(feats, torch.tensor([0, 0, 1, -1]))
    assert mem.num_prototypes == 2
    assert torch.allclose(mem.prototypes[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))
    assert torch.allclose(mem.prototypes[1], torch.tensor([0.0, 1.0]))


def test_update_keeps_unit_norm_ignores_outliers_and_follows_batch_order():
    mem = PrototypeMemory(2, momentum=0.5)
    mem.reset(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    before = mem.prototypes.clone()
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    mem.update(x, torch.tensor([0, -1, 0]))
    assert torch.equal(mem.prototypes[1], before[1])  # untouched: its only sample was an outlier
    step1 = F.normalize(0.5 * before[0] + 0.5 * x[0], dim=0)
    step2 = F.normalize(0.5 * step1 + 0.5 * x[2], dim=0)
    assert torch.allclose(mem.prototypes[0], step2)
    assert torch.allclose(mem.prototypes.norm(dim=1), torch.ones(2))


def test_hard_update_moves_towards_the_least_similar_member():
    mem = PrototypeMemory(2, momentum=0.5, hard=True)
    mem.reset(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    x = F.normalize(torch.tensor([[1.0, 0.1], [0.2, 1.0]]), dim=1)
    mem.update(x, torch.tensor([0, 0]))
    assert torch.allclose(mem.prototypes[0], F.normalize(0.5 * torch.tensor([1.0, 0.0]) + 0.5 * x[1], dim=0))


def test_update_has_no_autograd_side_effects():
    mem = PrototypeMemory(3)
    mem.reset(F.normalize(torch.randn(4, 3), dim=1), torch.tensor([0, 1, 2, 0]))
    v = F.normalize(torch.randn(4, 3, requires_grad=True), dim=1)
    loss = mem.logits(v, 0.05).logsumexp(1).mean()
    loss.backward()
    before = mem.prototypes.clone()
    mem.update(v, torch.tensor([0, 1, 2, -1]))
    assert not mem.prototypes.requires_grad and not torch.equal(before, mem.prototypes)
