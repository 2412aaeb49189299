"""kNN monitor against a brute-force reference on random features."""
import torch
import torch.nn.functional as F

from common.knn import knn_predict


def brute_force(query, bank, labels, classes, k, t):
    preds = []
    for q in query:
        sims = [(float(q @ b), int(l)) for b, l in zip(bank, labels)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * classes
        for s, l in sims[:k]:
            votes[l] += torch.exp(torch.tensor(s / t)).item()
        preds.append(max(range(classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


def test_matches_brute_force_on_random_features():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(300, 16), dim=1)
    labels = torch.randint(0, 5, (300,))
    query = F.normalize(torch.randn(50, 16), dim=1)
    pred = knn_predict(query, bank, labels, 5, k=20, t=0.1, chunk=7)  # chunks of uneven size
    assert torch.equal(pred, brute_force(query, bank, labels, 5, 20, 0.1))


def test_recovers_clustered_labels_and_caps_k():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(3, 8), dim=1)
    labels = torch.arange(3).repeat_interleave(10)
    bank = F.normalize(centres[labels] + 0.05 * torch.randn(30, 8), dim=1)
    query = F.normalize(centres + 0.05 * torch.randn(3, 8), dim=1)
    # k larger than the bank is capped to the bank size (tiny subsets in quick runs)
    assert knn_predict(query, bank, labels, 3, k=200, t=0.1).tolist() == [0, 1, 2]
