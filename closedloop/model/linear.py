"""The linear baseline of Kindel et al. (2019): pixels → rates by ridge regression.

Fitted in closed form (no iterations, no randomness): for each candidate penalty the
weights follow from one SVD of the centred training pixels, and the stopping subset
picks the penalty with the lowest Eq. 1 loss — the linear analogue of early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from closedloop.model.cores import as_image_batch


class LinearPixelModel(nn.Module):
    """rate[u] = Σ_p w[p, u] · pixel[p] + b[u], with the same interface as the CNNs.

    Members exist only so the interface matches (`forward_members`); a fit uses one.
    """

    #: Constructor arguments as plain data, set by `build_network` (and by `fit_model` on a ridge fit).
    build_spec: dict

    def __init__(self, n_pixels: int, n_units: int, n_members: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_members, n_pixels, n_units))
        self.bias = nn.Parameter(torch.zeros(n_members, n_units))

    @property
    def n_members(self) -> int:
        return int(self.bias.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.bias.shape[1])

    def forward_members(self, images: torch.Tensor) -> torch.Tensor:
        pixels = as_image_batch(images).flatten(1)
        pixels = pixels.unsqueeze(0).expand(self.n_members, -1, -1)
        return torch.baddbmm(self.bias.unsqueeze(1), pixels, self.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_members(images).mean(dim=0)

    def regularizer(self) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def init_member(self, member: int, generator: torch.Generator) -> None:
        self.weight[member].zero_()
        self.bias[member].zero_()


@dataclass
class RidgeFit:
    """Result of `fit_ridge`: chosen penalty and the loss of every candidate."""

    model: LinearPixelModel
    alphas: np.ndarray  # relative penalties tried
    train_loss: np.ndarray  # normalised Eq. 1 loss per alpha on the training images
    stop_loss: np.ndarray  # ... and on the stopping subset
    best_index: int


def fit_ridge(
    train_images: np.ndarray,
    train_rates: np.ndarray,
    stop_images: np.ndarray,
    stop_rates: np.ndarray,
    inverse_variance: np.ndarray,
    relative_alphas: tuple[float, ...],
) -> RidgeFit:
    """Closed-form ridge regression from pixels to rates.

    Parameters
    ----------
    train_images, stop_images
        (n, H, W) images.
    train_rates, stop_rates
        (n, n_units) mean rates in Hz.
    inverse_variance
        (n_units,) 1 / var of each unit's training rates (Eq. 1 weights).
    relative_alphas
        Penalties relative to the mean squared singular value of the centred pixels,
        so one grid suits any image size and contrast.

    Returns
    -------
    RidgeFit
        With a `LinearPixelModel` (float32, CPU) for the best penalty.
    """
    x = train_images.reshape(len(train_images), -1).astype(np.float64)
    y = train_rates.astype(np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    scale = float(np.mean(s**2)) if s.size and np.any(s > 0) else 1.0
    x_stop = stop_images.reshape(len(stop_images), -1).astype(np.float64)
    alphas = np.asarray(relative_alphas, dtype=np.float64)
    train_loss, stop_loss, weights = [], [], []
    for alpha in alphas:
        shrink = s / (s**2 + alpha * scale)
        w = vt.T @ (shrink[:, None] * uty)  # (pixels, units)
        b = y_mean - x_mean @ w
        train_loss.append(_normalised_loss(x @ w + b, y, inverse_variance))
        stop_loss.append(_normalised_loss(x_stop @ w + b, stop_rates, inverse_variance))
        weights.append((w, b))
    best = int(np.argmin(stop_loss))
    model = LinearPixelModel(x.shape[1], y.shape[1], 1)
    with torch.no_grad():
        model.weight[0].copy_(torch.from_numpy(weights[best][0]))
        model.bias[0].copy_(torch.from_numpy(weights[best][1]))
    return RidgeFit(model, alphas, np.asarray(train_loss), np.asarray(stop_loss), best)


def _normalised_loss(prediction: np.ndarray, rates: np.ndarray, inverse_variance: np.ndarray) -> float:
    return float(np.mean((prediction - rates) ** 2 * inverse_variance))
