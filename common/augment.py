"""Batched augmentation on tensors: every view of a whole batch in a handful of tensor ops.

The data set lives on the training device as uint8 (N, 3, H, W); `BatchAugment(kind, size, mean,
std)(x, generator=g)` returns the normalised float views of the batch `x`, drawing every random
parameter per sample from `g`, so the same generator state gives the same views. The
distributions are those of the per-image torchvision pipeline in common.data.pil_transform
(the reference path, still selectable with --aug pil):

  strong: RandomResizedCrop(size, scale=(0.2, 1), ratio=(3/4, 4/3)), flip p=0.5,
          ColorJitter(0.4, 0.4, 0.4, 0.1) w.p. 0.8 (its four ops in a random order per image),
          grayscale p=0.2, PIL Gaussian blur sigma ~ U[0.1, 2] w.p. 0.5, normalise
  weak:   RandomResizedCrop(size, scale=(0.2, 1)), flip p=0.9, normalise
  linear: RandomResizedCrop(size) (scale 0.08-1), flip p=0.5, normalise
  test:   normalise

kornia is used for the hue rotation and the per-sample separable blur convolution. The rest is
written here because kornia's versions differ from the reference in distribution:
  - its ColorJitter draws one order of the four ops per batch; torchvision draws one per image;
  - its crop resamples through an affine warp (its own corner convention, reading pixels outside
    the box); torchvision crops integer boxes from the PIL image and resizes them with PIL's
    bilinear filter (half-pixel centres, edges clamped to the box), which is reproduced exactly
    here as two gathers, with the flip folded into the column indices for free;
  - its blur is a truncated Gaussian; the reference's is PIL's GaussianBlur(radius=sigma), which
    is three passes of an "extended" box blur (fractional end weights) with the same variance.
    Its exact kernel is built here per sample: for sigma <= 2 it spans 13 taps (box radius
    1.375 -> 5 taps, three passes -> 13), so kernel size 13 with replicated edges reproduces the
    reference's effect to within uint8 rounding (a true Gaussian of the same sigma differs by up to
    0.017 in a tap); see tests/test_augment.py;
  - kornia draws from the global RNG; here every draw comes from the caller's generator.
"""
import functools
import math

import torch

# per view kind: crop scale, flip p, jitter p, grayscale p, blur p (None: no crop at all)
KINDS = {
    "strong": dict(scale=(0.2, 1.0), flip=0.5, jitter=0.8, gray=0.2, blur=0.5),
    "weak": dict(scale=(0.2, 1.0), flip=0.9, jitter=0.0, gray=0.0, blur=0.0),
    "linear": dict(scale=(0.08, 1.0), flip=0.5, jitter=0.0, gray=0.0, blur=0.0),
    "test": dict(scale=None, flip=0.0, jitter=0.0, gray=0.0, blur=0.0),
}
RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect-ratio range
JITTER = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
BLUR_SIGMA = (0.1, 2.0)
BLUR_TAPS = 5  # support of one of PIL's three box passes at sigma <= 2 (radius 1.375)
LUMA = (0.299, 0.587, 0.114)  # PIL's convert("L")


class BatchAugment:
    """One view kind for whole uint8 batches: `aug(x, generator=g)` -> normalised float32 views.

    `aug(x, generator=g, return_params=True)` also returns the sampled parameters (dict of
    per-sample tensors: top, left, height, width, flip, jitter, factors, order, gray, blur, sigma).
    """

    def __init__(self, kind, size, mean, std):
        if kind not in KINDS:
            raise ValueError(f"unknown view kind {kind}")
        self.kind, self.size = kind, size
        self.p = KINDS[kind]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean_std = {}  # per device, copied there once

    def __call__(self, x, generator=None, return_params=False):
        params = self.sample(x.shape[0], x.shape[2], x.shape[3], x.device, generator)
        out = self.apply(x, params)
        return (out, params) if return_params else out

    # ------------------------------------------------------------------ parameters
    def sample(self, n, height, width, device, generator=None):
        def rand(*shape, dtype=torch.float32):
            return torch.rand(*shape, generator=generator, device=device, dtype=dtype)

        p, params = self.p, {}
        if p["scale"] is not None:
            params.update(crop_params(n, height, width, p["scale"], RATIO, rand))
        params["flip"] = rand(n) < p["flip"]
        if p["jitter"]:
            applied = rand(n) < p["jitter"]
            b, c, s, h = JITTER
            lo = _constant((1 - b, 1 - c, 1 - s, -h), device)
            hi = _constant((1 + b, 1 + c, 1 + s, h), device)
            factors = lo + (hi - lo) * rand(n, 4)
            identity = _constant((1.0, 1.0, 1.0, 0.0), device)
            params["jitter"] = applied
            params["factors"] = torch.where(applied[:, None], factors, identity)
            params["order"] = rand(n, 4).argsort(1)  # a uniform permutation per image
        if p["gray"]:
            params["gray"] = rand(n) < p["gray"]
        if p["blur"]:
            params["blur"] = rand(n) < p["blur"]
            lo, hi = BLUR_SIGMA
            params["sigma"] = lo + (hi - lo) * rand(n)
        return params

    # ------------------------------------------------------------------ pixels
    def apply(self, x, params):
        if self.p["scale"] is None:
            out = x.float() / 255
            if self.p["flip"]:
                out = torch.where(params["flip"].view(-1, 1, 1, 1), out.flip(3), out)
        else:
            out = resized_crop(x, params, self.size)
        if "order" in params:
            out = color_jitter(out, params["factors"], params["order"], params["jitter"])
        if "gray" in params:
            out = torch.where(params["gray"].view(-1, 1, 1, 1), grayscale(out).expand_as(out), out)
        if "blur" in params:
            out = pil_gaussian_blur(out, params["sigma"], params["blur"])
        if out.device not in self._mean_std:
            self._mean_std[out.device] = self.mean.to(out.device), self.std.to(out.device)
        mean, std = self._mean_std[out.device]
        return (out - mean) / std


@functools.lru_cache(maxsize=None)
def _constant(values, device):
    """A small constant tensor on `device`, made once: a host-to-device copy per batch would make
    the host wait for the GPU (a blocking copy synchronises the stream) several times a batch."""
    return torch.tensor(values, device=device)


def crop_params(n, height, width, scale, ratio, rand):
    """torchvision RandomResizedCrop.get_params for n images at once: up to 10 tries of
    (area ~ U(scale) * H * W, log aspect ~ U(log ratio)); the first try whose rounded box fits
    wins; if none fits, the central crop clamped to the ratio range. Offsets are uniform integers.
    Sizes are computed in float64 and rounded half-to-even, as Python's round() does."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * rand(n, 10, dtype=torch.float64))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * rand(n, 10, dtype=torch.float64))
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(1, keepdim=True)  # index of the first fitting try (0 if none)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    found = fits.any(1)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = (rand(n, dtype=torch.float64) * (height - h + 1)).floor().long()
    left = (rand(n, dtype=torch.float64) * (width - w + 1)).floor().long()
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return {"top": top, "left": left, "height": h, "width": w}


def _bilinear_matrix(start, length, size, in_size):
    """(N, size, in_size) matrices of PIL's bilinear resize of pixels [start, start+length) to
    `size` pixels (upsampling or same size, as in every recipe): half-pixel centres, edges clamped
    to the box, so no pixel outside the box contributes. Two non-zeros per row."""
    o = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    length_f = length.float()[:, None]
    src = (o * length_f / size - 0.5).clamp(min=0).minimum(length_f - 1)
    i0 = src.floor()
    w1 = (src - i0).unsqueeze(2)
    i0 = i0.long()
    i1 = (i0 + 1).minimum(length[:, None] - 1)
    i0 = i0.unsqueeze(2)
    m = torch.zeros(len(length), size, in_size, device=start.device)
    m.scatter_add_(2, i0 + start[:, None, None], 1 - w1)
    m.scatter_add_(2, i1.unsqueeze(2) + start[:, None, None], w1)
    return m


def resized_crop(x, params, size):
    """Crop each image of uint8 x (N, 3, H, W) to its box and resize it bilinearly to size x size
    (float in [0, 1]); images with params['flip'] come out mirrored.

    The separable resize is two batched matrix products (columns, then rows) with sparse
    interpolation matrices: fast on CPU and GPU alike (a gather-based version was 4x slower on CPU)."""
    n, c, height, width = x.shape
    rows = _bilinear_matrix(params["top"], params["height"], size, height)  # (N, S, H)
    cols = _bilinear_matrix(params["left"], params["width"], size, width)  # (N, S, W)
    cols = torch.where(params["flip"].view(n, 1, 1), cols.flip(1), cols)
    out = torch.bmm((x.float() / 255).view(n, c * height, width), cols.transpose(1, 2))
    return rows.unsqueeze(1) @ out.view(n, c, height, size)


def grayscale(x):
    """PIL's convert('L') luma of float RGB x (N, 3, H, W) -> (N, 1, H, W)."""
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def color_jitter(x, factors, order, applied=None):
    """torchvision ColorJitter on float RGB in [0, 1], per image: factors (N, 4) = brightness,
    contrast, saturation, hue shift (identity 1, 1, 1, 0); order (N, 4) = the permutation of the
    ops (0 brightness, 1 contrast, 2 saturation, 3 hue) applied to that image, clamped after each.
    `applied` (N,) bool, if given, skips the hue rotation of the images it excludes.

    Brightness, contrast and saturation are each a blend f*x + (1-f)*degenerate towards black,
    the mean luma or the luma image, so one fused blend per position serves all three (the mean
    luma is the luma of the channel means); the hue rotation only runs on the images whose op
    at that position is the hue.
    """
    n = x.shape[0]
    luma_w = _constant(LUMA, x.device).view(1, 3, 1, 1)
    hue_ok = torch.ones(n, dtype=torch.bool, device=x.device) if applied is None else applied
    for pos in range(4):
        op = order[:, pos]
        f = factors.gather(1, op[:, None].clamp(max=2))[:, 0]
        f = torch.where(op == 3, torch.ones_like(f), f)
        # degenerate = saturation * luma + contrast * mean luma (0 for brightness and hue)
        mean_luma = (x.mean((2, 3)) * luma_w.view(1, 3)).sum(1)
        gain = ((op == 2) * (1 - f)).view(n, 1, 1, 1)
        offset = ((op == 1) * (1 - f) * mean_luma).view(n, 1, 1, 1)
        luma = (x * luma_w).sum(1, keepdim=True)
        x = torch.addcmul(torch.addcmul(offset, gain, luma), f.view(n, 1, 1, 1), x).clamp_(0, 1)
        idx = ((op == 3) & hue_ok).nonzero()[:, 0]
        if idx.numel():
            x = x.index_copy(0, idx, adjust_hue(x.index_select(0, idx), factors[idx, 3]).clamp_(0, 1))
    return x


def adjust_hue(x, shift):
    """Rotate the hue of float RGB x (N, 3, H, W) by `shift` (N,) turns, as torchvision's
    adjust_hue: RGB -> HSV, h = (h + shift) mod 1, back to RGB. The HSV round trip is written with
    max/min/delta directly (kornia's rgb_to_hsv/hsv_to_rgb gave the same result at a third of the
    speed on CPU, the bottleneck of the whole pipeline)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe,
                    torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h6 = (h + 6 * shift.view(-1, 1, 1)) % 6  # hue in sixths of a turn
    # channel = V - V*S*clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6, n = 5, 3, 1 for R, G, B
    out = []
    for n in (5, 3, 1):
        k = (h6 + n) % 6
        out.append(maxc - delta * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, 1)


def pil_box_kernel(sigma, passes=3):
    """1-d kernels (N, taps) of one pass of PIL's GaussianBlur(radius=sigma), which is `passes`
    box blurs of fractional radius r = l + a, chosen (Gwosdek et al., 2011) so that the passes'
    variance is sigma^2: weight 1 on the 2l+1 central taps and a on the next one each side."""
    s2 = sigma.double() ** 2 / passes
    length = torch.sqrt(12 * s2 + 1)
    l = torch.floor((length - 1) / 2)
    a = (2 * l + 1) * (l * (l + 1) - 3 * s2) / (6 * (s2 - (l + 1) ** 2))
    half = BLUR_TAPS // 2
    d = torch.arange(-half, half + 1, device=sigma.device, dtype=torch.float64).abs()
    box = torch.where(d <= l[:, None], 1.0, torch.where(d <= l[:, None] + 1, a[:, None], 0.0))
    return (box / box.sum(1, keepdim=True)).float()


def pil_gaussian_blur(x, sigma, applied):
    """Blur the images where `applied` as PIL's GaussianBlur(radius=sigma) does, per image: three
    box passes along each axis, each with the edge pixels replicated (replicating once around the
    combined 13-tap kernel instead is off by up to 16/255 at the borders); the others pass through."""
    from kornia.filters import filter2d_separable
    idx = applied.nonzero()[:, 0]
    if not idx.numel():
        return x
    k = pil_box_kernel(sigma[idx])
    y = x.index_select(0, idx)
    for _ in range(3):
        y = filter2d_separable(y, k, k, border_type="replicate")
    return x.index_copy(0, idx, y)
