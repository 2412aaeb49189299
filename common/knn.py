"""Weighted k-nearest-neighbour monitor (InstDisc-style) on frozen backbone features."""
import torch
import torch.nn.functional as F

from common.data import normalized_batches


@torch.no_grad()
def extract(backbone, split, ds, device, batch_size=1024, amp=False):
    """L2-normalised features of a whole split (test transform), and its labels, on `device`."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in normalized_batches(split, ds, device, batch_size):
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp):
            f = backbone(x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(query, bank, bank_labels, num_classes, k=200, t=0.1, chunk=1024):
    """Predicted class of each query: vote of its k most cosine-similar bank entries, each
    weighted by exp(sim / t). `query` and `bank` are L2-normalised rows; processed in chunks of
    queries so memory stays bounded for large banks."""
    k = min(k, bank.shape[0])
    preds = []
    for q in query.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / t).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_top1(backbone, ds, device, k=200, t=0.1, amp=False):
    """kNN top-1 (%) of the test split against the training split."""
    bank, bank_labels = extract(backbone, ds.train, ds, device, amp=amp)
    query, labels = extract(backbone, ds.test, ds, device, amp=amp)
    pred = knn_predict(query, bank, bank_labels, ds.num_classes, k, t)
    return (pred == labels).float().mean().item() * 100
