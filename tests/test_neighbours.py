"""Nearest-neighbour queue (common/queue.py) and what every queue-neighbour script shares: top-k
retrieval, the 1+k layout, purity, the symmetric order that keeps a batch away from its own keys,
and one tiny epoch per script with the purity column filled."""
import csv
import json

import pytest
import torch
import torch.nn.functional as F

from common.log import PRETRAIN_COLUMNS
from common.queue import Queue, nearest_neighbours, symmetric_terms
from conftest import tiny_model, train_tiny


def test_retrieval_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    query = torch.randn(6, 8, generator=g) * 3          # norms differ: similarity is the cosine
    bank = torch.randn(20, 8, generator=g) * torch.rand(20, 1, generator=g) * 5
    found = nearest_neighbours(query, bank, 3)
    for i in range(6):
        cos = [F.cosine_similarity(query[i], bank[j], dim=0).item() for j in range(20)]
        assert found.index[i].tolist() == sorted(range(20), key=lambda j: -cos[j])[:3]
    assert found.neighbours.shape == (6, 3, 8) and found.with_key.shape == (6, 4, 8)
    torch.testing.assert_close(found.neighbours, bank[found.index])
    # the 1+k layout: each key followed by its k neighbours
    torch.testing.assert_close(found.with_key[:, 0], query)
    torch.testing.assert_close(found.with_key[:, 1:], found.neighbours)
    assert found.purity is None


def test_purity_on_hand_made_queue():
    q = Queue(4, 2)
    q.enqueue(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]]),
              torch.tensor([3, 5, 3, 5]))
    query = torch.tensor([[1.0, 0.1], [0.1, 1.0]])
    found = q.retrieve(query, 2, labels=torch.tensor([3, 3]))
    # query 0 -> entries 0 (label 3) and 3 (label 5); query 1 -> entries 1 (5) and 3 (5)
    assert found.index.tolist() == [[0, 3], [1, 3]]
    assert found.purity.item() == pytest.approx(1 / 4)
    assert q.retrieve(query, 1, labels=torch.tensor([3, 5])).purity.item() == 1.0


def test_a_batch_never_retrieves_its_own_keys():
    torch.manual_seed(0)
    q = Queue(16, 8)
    keys = F.normalize(torch.randn(4, 8), dim=1)
    found = q.retrieve(keys, 2)                    # read first ...
    q.enqueue(keys, torch.arange(4))               # ... then write
    assert not (found.index < 4).all()             # slots 0-3 held random vectors when read
    assert all(not torch.equal(n, k) for n in found.neighbours.flatten(0, 1) for k in keys)
    # the order matters: read after the write, every key would be its own nearest neighbour
    assert q.retrieve(keys, 1).index[:, 0].tolist() == [0, 1, 2, 3]


def test_symmetric_terms_reversed_first_without_enqueue():
    calls = []

    def term(a, b, enqueue):
        calls.append((a, b, enqueue))
        return torch.tensor(float(len(calls))), torch.tensor(0.1 * len(calls))

    loss, purity = symmetric_terms(term, "v1", "v2")
    assert calls == [("v2", "v1", False), ("v1", "v2", True)]
    assert loss.item() == pytest.approx(1.5) and purity.item() == pytest.approx(0.15)
    calls.clear()
    symmetric_terms(term, "v1", "v2", symmetric=False)
    assert calls == [("v1", "v2", True)]


@pytest.mark.parametrize("name,views,queues", [("train_nnclr", 2, 1), ("train_msf", 2, 1),
                                               ("train_snclr", 2, 1), ("train_cmsf", 3, 2)])
def test_models_read_every_queue_before_writing_it(monkeypatch, name, views, queues):
    model = tiny_model(name, "--queue-size", "32", "--topk", "2")
    initial = {id(m): m.keys.clone() for m in model.modules() if isinstance(m, Queue)}
    assert len(initial) == queues
    events = []
    retrieve, enqueue = Queue.retrieve, Queue.enqueue

    def spy_retrieve(self, query, k, labels=None):
        found = retrieve(self, query, k, labels)
        events.append(("read", torch.equal(self.keys, initial[id(self)])))
        return found

    def spy_enqueue(self, keys, labels):
        events.append(("write", keys.shape[0]))
        return enqueue(self, keys, labels)

    monkeypatch.setattr(Queue, "retrieve", spy_retrieve)
    monkeypatch.setattr(Queue, "enqueue", spy_enqueue)
    torch.manual_seed(1)
    loss, purity = model([torch.randn(16, 3, 32, 32) for _ in range(views)], torch.arange(16) % 10)
    assert torch.isfinite(loss) and 0 <= purity.item() <= 1
    # both terms read every queue, then the enqueueing term writes each queue once, last
    assert [e[0] for e in events] == ["read"] * 2 * queues + ["write"] * queues
    assert all(e[1] for e in events if e[0] == "read")       # as it was before this batch
    assert all(e[1] == 16 for e in events if e[0] == "write")
    for m in model.modules():
        if isinstance(m, Queue):
            assert int(m.ptr) == 16 and m.labels[:16].tolist() == (torch.arange(16) % 10).tolist()


RUNS = [("train_nnclr", [], "demo_5", 2), ("train_nnclr", ["--topk", "5"], "demo_5a", 2),
        ("train_msf", [], "demo_6", 2), ("train_snclr", [], "demo_7", 2),
        ("train_cmsf", [], "demo_9", 3)]


@pytest.mark.parametrize("name,extra,record,views", RUNS, ids=[r[2] for r in RUNS])
def test_one_epoch_logs_purity(tmp_path, name, extra, record, views):
    run = f"{record}_seed1339"
    assert run in train_tiny(name, tmp_path, "--queue-size", "32", *extra)
    res = tmp_path / "results"
    with open(res / f"{run}_pretrain.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == PRETRAIN_COLUMNS and [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["purity"] == ""                       # random init: no training step yet
    assert 0 <= float(rows[1]["purity"]) <= 1 and rows[1]["loss"] and rows[1]["knn_top1"]
    assert (res / f"{run}_linear.csv").exists()
    config = json.loads((res / f"{run}_config.json").read_text())
    assert config["finished"] and config["record"] == record and config["views"] == views
    assert config["queue_size"] == 32 and config["topk"] == (5 if record != "demo_5" else 1)
