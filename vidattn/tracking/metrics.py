"""OTB one-pass-evaluation metrics (Wu, Lim and Yang, "Object Tracking Benchmark", TPAMI 2015).

- **Success AUC**: the mean, over the 21 IoU thresholds 0, 0.05, ..., 1.0, of the fraction of
  frames whose IoU with the ground truth exceeds the threshold.
- **Precision@20**: the fraction of frames whose box centre lies within 20 pixels of the
  ground-truth centre.

Boxes are ``(x, y, w, h)`` pixels, one row per frame.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.0, 1.0, 21)


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two ``(N, 4)`` arrays of ``x, y, w, h`` boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def centre_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise distance in pixels between box centres."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ca = a[:, :2] + a[:, 2:] / 2
    cb = b[:, :2] + b[:, 2:] / 2
    return np.linalg.norm(ca - cb, axis=1)


def success_curve(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Fraction of frames with IoU above each of the 21 thresholds."""
    iou = iou_xywh(pred, gt)
    return np.array([(iou > t).mean() for t in IOU_THRESHOLDS])


def success_auc(pred: np.ndarray, gt: np.ndarray) -> float:
    """OTB success AUC in [0, 1]."""
    return float(success_curve(pred, gt).mean())


def precision_at(pred: np.ndarray, gt: np.ndarray, px: float = 20.0) -> float:
    """Fraction of frames whose centre error is at most ``px`` pixels."""
    return float((centre_error(pred, gt) <= px).mean())


def evaluate(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``{"auc", "precision20", "mean_iou"}`` for one sequence."""
    n = min(len(pred), len(gt))
    pred, gt = np.asarray(pred)[:n], np.asarray(gt)[:n]
    return {
        "auc": success_auc(pred, gt),
        "precision20": precision_at(pred, gt),
        "mean_iou": float(iou_xywh(pred, gt).mean()),
    }
