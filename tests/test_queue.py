"""FIFO queue: initial state, enqueue order and wrap-around, labels kept alongside keys."""
import torch
import torch.nn.functional as F

from common.queue import Queue


def test_initial_entries_are_random_unit_vectors_without_labels():
    torch.manual_seed(0)
    q = Queue(8, 4)
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(8))
    assert q.labels.tolist() == [-1] * 8 and int(q.ptr) == 0


def test_fifo_and_wrap_around():
    q = Queue(5, 2)
    a = torch.arange(6.).view(3, 2)          # keys 0..2
    q.enqueue(a, torch.tensor([10, 11, 12]))
    assert int(q.ptr) == 3
    torch.testing.assert_close(q.keys[:3], a)
    b = torch.arange(6., 12.).view(3, 2)     # keys 3..5: two fill the end, one wraps to slot 0
    q.enqueue(b, torch.tensor([13, 14, 15]))
    assert int(q.ptr) == 1
    torch.testing.assert_close(q.keys, torch.stack([b[2], a[1], a[2], b[0], b[1]]))
    assert q.labels.tolist() == [15, 11, 12, 13, 14]


def test_batch_dividing_the_queue_cycles_exactly():
    q = Queue(4, 3)
    for step in range(3):
        q.enqueue(F.normalize(torch.ones(2, 3) * (step + 1)), torch.full((2,), step))
    assert q.labels.tolist() == [2, 2, 1, 1] and int(q.ptr) == 2


def test_state_dict_holds_keys_labels_and_pointer():
    q = Queue(4, 2)
    q.enqueue(torch.ones(3, 2), torch.tensor([1, 2, 3]))
    r = Queue(4, 2)
    r.load_state_dict(q.state_dict())
    torch.testing.assert_close(r.keys, q.keys)
    assert r.labels.tolist() == q.labels.tolist() and int(r.ptr) == 3
