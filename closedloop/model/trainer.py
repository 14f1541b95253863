"""The epoch loop of a fit: Adam, early stopping with the best weights kept, on one device.

All data go to the device once (`DeviceData`); one epoch is one full-batch Adam step (or a
few minibatch steps) plus a forward pass on the stopping subset.  The early-stopping
bookkeeping (best loss, best epoch, a copy of the best weights, the epoch counter) runs on
the device with `torch.where`, so nothing forces a host sync except the stopping check every
``stop_check_every`` epochs.  An epoch is therefore a fixed sequence of kernels on
fixed-shape tensors, and on a GPU it is captured once as a CUDA graph and replayed
(`ModelConfig.cuda_graphs`).  Ensemble members are fused into one network on a GPU, also
when they train on different images (rotating stop sets: per-member loss masks and
batch-norm statistics), and when they come from search trials with different training
settings (`MemberSettings`: per-member step size, decay, patience and epoch limit).

Measured on one H200 (``benchmarks/train_speed.py``, 500 epochs, 178 + 38 images, 40
units): the Table-1 network 0.71 ms/epoch with graphs vs 3.9 ms eager; a fused
8-member Table-1 ensemble 2.2 vs 4.6 ms; the 8-member ``recommended`` ensemble 4.8 vs
6.7 ms.  2-core CPU: Table-1 network ≈ 24 ms/epoch.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from closedloop.model.member_settings import MemberSettings
from closedloop.model.model_config import ModelConfig
from closedloop.model.networks import CoreReadoutNetwork


class DeviceData:
    """Training and stopping tensors, moved to the device once (``stop=None``: no stopping set).

    With ``train_mask``/``stop_mask`` ((n_members, n_images) 0/1) the members of one
    fused network train and stop on different images of one batch (rotating stop
    sets): ``train_images`` and ``stop_images`` are then the same tensor of all fit
    images, and the statistics below are per member ((n_members, n_units)).

    NaN rates are responses that do not exist: the units of sessions pooled under one core
    (`closedloop.model.shared_core`) each saw their own session's images only.  They
    become ``train_observed``/``stop_observed`` ((n_images, n_units) 0/1; ``None`` when
    every rate exists), which the loss and the units' statistics leave them out by.

    ``pixel_spread`` ((1, channels, side, side)) is each pixel's standard deviation over
    ``train_images`` (with rotating stop sets all fit images, shared by the members), the
    scale of `ModelConfig.input_noise`.
    """

    def __init__(self, images, rates, subsets: list[tuple[np.ndarray, np.ndarray | None]], device: torch.device):
        def put(array) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32).to(device)

        self.device = device
        self.input_size = images.shape[1]
        self.train_mask = self.stop_mask = None
        observed = np.isfinite(rates)
        partial = not observed.all()
        self.train_observed: torch.Tensor | None = None
        self.stop_observed: torch.Tensor | None = None
        if partial:
            rates = np.where(observed, rates, 0.0)
        if len(subsets) == 1:
            train, stop = subsets[0]
            self.train_images = put(images[train]).unsqueeze(1)
            self.train_rates = put(rates[train])
            self.stop_images = None if stop is None else put(images[stop]).unsqueeze(1)
            self.stop_rates = None if stop is None else put(rates[stop])
            if partial:
                self.train_observed = put(observed[train])
                self.stop_observed = None if stop is None else put(observed[stop])
            trained = [train]
        else:
            fit = np.unique(np.concatenate([np.concatenate([t, s]) for t, s in subsets]))
            position = {image: k for k, image in enumerate(fit)}
            train_mask = np.zeros((len(subsets), len(fit)), np.float32)
            stop_mask = np.zeros_like(train_mask)
            for member, (train, stop) in enumerate(subsets):
                if stop is None:
                    raise ValueError("members that train on different images each need their own stopping images")
                train_mask[member, [position[i] for i in train]] = 1.0
                stop_mask[member, [position[i] for i in stop]] = 1.0
            self.train_images = self.stop_images = put(images[fit]).unsqueeze(1)
            self.train_rates = self.stop_rates = put(rates[fit])
            self.train_mask, self.stop_mask = put(train_mask), put(stop_mask)
            if partial:
                self.train_observed = self.stop_observed = put(observed[fit])
            trained = [train for train, _ in subsets]
        if partial:  # each unit's statistics over the images it has responses to
            kept = np.where(observed, rates, np.nan)
            variance = np.nan_to_num(np.stack([np.nanvar(kept[t], axis=0) for t in trained]))
            means = np.nan_to_num(np.stack([np.nanmean(kept[t], axis=0) for t in trained]))
        else:
            variance = np.stack([np.var(rates[t], axis=0) for t in trained])
            means = np.stack([rates[t].mean(axis=0) for t in trained])
        # Floor: a rotated training subset may miss the few images that drive a sparse unit.
        variance = np.maximum(variance, 1e-6)
        self.inverse_variance = put(1.0 / variance).unsqueeze(1)  # (members or 1, 1, units)
        self.mean_rate = put(means)
        self.std_rate = put(np.sqrt(variance))
        self.pixel_spread = self.train_images.std(dim=0, keepdim=True)


def member_data(
    images: np.ndarray,
    rates: np.ndarray,
    train_mask: np.ndarray,
    stop_mask: np.ndarray | None,
    unit_weight: np.ndarray,
    device: torch.device,
) -> DeviceData:
    """Tensors for members that fit *different data* on one batch of images (several sessions).

    Parameters
    ----------
    images
        (n_images, n_members, side, side): each member's own images (a session's, padded
        with zeros to the longest session; the masks leave the padding out).
    rates
        (n_members, n_images, n_units): each member's mean rates (0 where unused).
    train_mask, stop_mask
        (n_members, n_images) 0/1: which images each member trains and stops on
        (``stop_mask=None``: no stopping set, a refit).
    unit_weight
        (n_members, n_units): 1 for a member's own units, 0 for padding (sessions with
        fewer units than the widest one).  The loss averages over a member's own
        units only, as if it were fitted alone.
    """

    def put(array) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32).to(device)

    data = DeviceData.__new__(DeviceData)
    data.device = device
    data.input_size = images.shape[-1]
    data.train_images = data.stop_images = put(images)
    data.train_rates = data.stop_rates = put(rates)
    data.train_mask = put(train_mask)
    data.stop_mask = None if stop_mask is None else put(stop_mask)
    data.train_observed = data.stop_observed = None
    variance, mean = np.ones(rates.shape[::2]), np.zeros(rates.shape[::2])  # (members, units)
    for member in range(rates.shape[0]):
        trained = rates[member, train_mask[member] > 0]
        variance[member] = np.maximum(np.var(trained, axis=0), 1e-6)
        mean[member] = trained.mean(axis=0)
    own = unit_weight > 0
    # Mean over all (padded) units × this factor = mean over the member's own units.
    scale = unit_weight.shape[1] / np.maximum(own.sum(axis=1, keepdims=True), 1)
    data.inverse_variance = put(np.where(own, scale / variance, 0.0)).unsqueeze(1)
    data.mean_rate = put(np.where(own, mean, 0.0))
    data.std_rate = put(np.where(own, np.sqrt(variance), 1.0))
    # Over each member's own training images, not the zero padding.
    spread = [np.std(images[train_mask[member] > 0, member], axis=0, ddof=1) for member in range(images.shape[1])]
    data.pixel_spread = put(np.nan_to_num(np.stack(spread))).unsqueeze(0)
    return data


def rate_weights(prediction: torch.Tensor, mean_rate: torch.Tensor) -> torch.Tensor:
    """Eq. 1's per-term weights for ``loss_weights`` "rate": a unit's mean rate over max(prediction,
    that mean), so 1 at or below the mean and falling as 1 / rate above it, as a Poisson count's
    inverse variance does.  Flooring at the mean keeps images predicted near zero (most images, for
    a sparse unit) from dominating, and the weights carry no gradient (iteratively reweighted
    least squares).

    ``prediction`` (members, images, units); ``mean_rate`` (members or 1, units).
    """
    mean = mean_rate.unsqueeze(1).clamp_min(1e-6)
    return mean / torch.maximum(prediction.detach(), mean)


def mean_correlation(prediction: torch.Tensor, rates: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each member's mean over units of the weighted Pearson r of prediction and rate.

    ``prediction``, ``rates`` and ``weight`` are (members, images, units); a weight of 0
    leaves an image (or one unit's response to it) out.  Units whose rates do not vary
    over the weighted images (padding, a unit that never fired there) are left out of
    the mean.  Device ops only, so it can sit in a captured CUDA graph.
    """
    total = weight.sum(dim=1, keepdim=True).clamp_min(1e-12)
    centred_prediction = prediction - (weight * prediction).sum(dim=1, keepdim=True) / total
    centred_rates = rates - (weight * rates).sum(dim=1, keepdim=True) / total
    covariance = (weight * centred_prediction * centred_rates).sum(dim=1)
    prediction_var = (weight * centred_prediction**2).sum(dim=1)
    rates_var = (weight * centred_rates**2).sum(dim=1)
    r = covariance / torch.sqrt(prediction_var * rates_var + 1e-12)
    varies = (rates_var > 1e-9).to(r.dtype)
    return (r * varies).sum(dim=1) / varies.sum(dim=1).clamp_min(1.0)


class Trainer:
    """Adam with early stopping on the stopping subset, best weights restored.

    Everything an epoch does is on the device, the epoch counter included, so on a GPU
    one full-batch epoch is captured once as a CUDA graph and replayed (`_graph`):
    one launch instead of a few hundred, which is what an epoch of these small networks
    is otherwise made of.  A member whose patience has run out is frozen in the
    bookkeeping (its best epoch cannot move), so a fused ensemble keeps exactly the
    epochs its members would keep if each were trained alone.

    ``ramp_epochs`` > 0 (warm starts) ramps the step size up linearly over those
    epochs: Adam's first steps move every weight by about the full learning rate
    whatever its gradient, which would throw a fitted model far from where it was.
    The ramp runs eagerly, before a graph is captured at the full step size.
    """

    #: Eager epochs before capture: cuDNN picks its kernels and Adam creates its state.
    GRAPH_WARMUP_EPOCHS = 3

    def __init__(
        self,
        model: CoreReadoutNetwork,
        data: DeviceData,
        config: ModelConfig,
        refit_epochs: np.ndarray | None = None,
        ramp_epochs: int = 0,
        members: MemberSettings | None = None,
    ):
        self.model, self.data, self.config = model, data, config
        device = data.device
        self.members = None if members is None else members.tensors(device)
        self.ramp_epochs = ramp_epochs
        self.eager_epochs = 0
        self.refit_epochs = None if refit_epochs is None else torch.as_tensor(refit_epochs, device=device)
        self.max_epochs = config.max_epochs if refit_epochs is None else int(np.max(refit_epochs))
        self.n_train = data.train_images.shape[0]
        # Augmentation (`ModelConfig.input_noise`): per-pixel noise scale, zero where the images never
        # vary, drawn by the core from the fit's own RNG stream (seeded, and replayable in a CUDA graph).
        model.core.training_noise = config.input_noise * data.pixel_spread if config.input_noise > 0 else None
        self.batch_size = config.batch_size if config.batch_size and config.batch_size < self.n_train else None
        # Eager epochs before capture: the graph warm-up, and the whole step-size ramp.
        self.eager_before_graph = max(self.GRAPH_WARMUP_EPOCHS, ramp_epochs + 1)
        self.use_graph = (
            config.cuda_graphs
            and device.type == "cuda"
            and self.batch_size is None
            and self.max_epochs > self.eager_before_graph
        )
        decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
        no_decay = [p for name, p in model.named_parameters() if not name.endswith("weight")]
        # Per-member settings: Adam steps at size 1 without decay, and `_member_step` adds each
        # member's decay and scales each member's update by its own step size.
        self.base_lr = config.learning_rate if members is None else 1.0
        self.decayed = decay
        self.trained = [p for p in model.parameters() if p.requires_grad]
        self.before = [torch.empty_like(p) for p in self.trained] if members is not None else []
        self.optimizer = torch.optim.Adam(
            [
                {"params": decay, "weight_decay": config.weight_decay if members is None else 0.0},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.base_lr,
            fused=True,  # one kernel for all parameters (CPU and CUDA): ~3x faster steps than foreach
            capturable=self.use_graph,  # step counts on the device, so the step can be in a graph
        )
        n_members = model.n_members
        self.epoch_index = torch.zeros((), dtype=torch.long, device=device)
        self.best_loss = torch.full((n_members,), float("inf"), device=device)
        self.best_epoch = torch.zeros(n_members, dtype=torch.long, device=device)
        self.since_best = torch.zeros(n_members, dtype=torch.long, device=device)
        self.done = torch.zeros(n_members, dtype=torch.bool, device=device)
        # A flat output tail stops at the last hinge while training, whatever a warm start's model
        # learnt its data reached; `run` lowers it to this fit's data at the end.
        if model.unit_nonlinearity is not None:
            model.unit_nonlinearity.reset_ceiling()
        # Parameters and saved buffers (batch-norm running statistics), every one member-major; not
        # buffers rebuilt from the geometry and never saved (a Gabor bank's filters, one set for all
        # members), which training does not change.
        self.tracked = dict(model.state_dict(keep_vars=True))
        self.best_state = {name: t.detach().clone() for name, t in self.tracked.items()}
        self.train_history = torch.zeros(self.max_epochs, n_members, device=device)
        self.stop_history = torch.zeros(self.max_epochs, n_members, device=device)

    def _member_loss(
        self, images: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor | None, observed: torch.Tensor | None
    ) -> torch.Tensor:
        """Normalised Eq. 1 loss of each member, over the images its ``mask`` row selects (all if None)
        and the responses ``observed`` marks (all if None): the mean over the terms that count.
        With ``loss_weights`` "rate" each term is weighted by `rate_weights`."""
        prediction = self.model.forward_members(images)
        squared = (prediction - rates) ** 2 * self.data.inverse_variance
        if self.config.loss_weights == "rate":
            squared = squared * rate_weights(prediction, self.data.mean_rate)
        if observed is not None:
            per_image = (squared * observed).sum(dim=2)  # (members, images)
            counts = observed.sum(dim=1)  # responses per image
            if mask is None:
                return per_image.sum(dim=1) / counts.sum().clamp_min(1.0)
            return (per_image * mask).sum(dim=1) / (mask * counts).sum(dim=1).clamp_min(1.0)
        if mask is None:
            return squared.mean(dim=(1, 2))
        per_image = squared.mean(dim=2)
        return (per_image * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def _stop_score(
        self, images: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor | None, observed: torch.Tensor | None
    ) -> torch.Tensor:
        """What the stopping images judge each member by, lower is better (``stop_metric``): its
        Eq. 1 loss, or minus the mean over units of Pearson r between prediction and rate."""
        if self.config.stop_metric == "loss":
            return self._member_loss(images, rates, mask, observed)
        prediction = self.model.forward_members(images)  # (members, images, units)
        weight = torch.ones(prediction.shape[:2], device=prediction.device) if mask is None else mask
        weight = weight.unsqueeze(2) if observed is None else weight.unsqueeze(2) * observed
        return -mean_correlation(prediction, rates.expand_as(prediction), weight)

    def _step(
        self, images: torch.Tensor, rates: torch.Tensor, mask: torch.Tensor | None, observed: torch.Tensor | None
    ) -> torch.Tensor:
        self.model.set_sample_weight(mask)
        member_loss = self._member_loss(images, rates, mask, observed)
        loss = member_loss.sum()
        penalty = self.model.regularizer()
        if penalty is not None:
            loss = loss + penalty
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.members is None:
            self.optimizer.step()
        else:
            self._member_step()
        return member_loss.detach()

    @torch.no_grad()
    def _member_step(self) -> None:
        """Adam with each member's own step size and coupled L2 decay (``members``).

        Adam's update is ``lr · m̂ / (√v̂ + ε)``, linear in ``lr`` and blind to a gradient's
        scale, so a per-member step size cannot come from scaling gradients: the optimiser
        steps at size 1 and each member's update is scaled by its own size afterwards.
        Decay is added to the gradient first, as Adam's ``weight_decay`` does.
        """
        assert self.members is not None
        lr, decay = self.members["learning_rate"], self.members["weight_decay"]

        def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return values.view(-1, *([1] * (like.dim() - 1)))

        for parameter in self.decayed:
            if parameter.grad is not None:
                parameter.grad.addcmul_(parameter, per_member(decay, parameter))
        for parameter, before in zip(self.trained, self.before):
            before.copy_(parameter)
        self.optimizer.step()
        for parameter, before in zip(self.trained, self.before):
            parameter.copy_(torch.lerp(before, parameter, per_member(lr, parameter)))

    def epoch(self) -> None:
        """One epoch; a fixed sequence of device work when full batch (what `_graph` captures)."""
        data, index = self.data, self.epoch_index
        if self.eager_epochs <= self.ramp_epochs:  # Python-side: only eager epochs ramp
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * (self.eager_epochs + 1) / (self.ramp_epochs + 1)
        self.eager_epochs += 1
        self.model.train()
        if self.batch_size is None:
            train_loss = self._step(data.train_images, data.train_rates, data.train_mask, data.train_observed)
        else:
            order = torch.randperm(self.n_train, device=data.device)
            total = torch.zeros_like(self.best_loss)
            seen = torch.zeros_like(self.best_loss)
            for start in range(0, self.n_train, self.batch_size):
                batch = order[start : start + self.batch_size]
                mask = None if data.train_mask is None else data.train_mask[:, batch]
                observed = None if data.train_observed is None else data.train_observed[batch]
                if observed is None:
                    weight = float(len(batch)) if mask is None else mask.sum(dim=1)
                else:  # the batch's share of responses that exist
                    weight = observed.sum() if mask is None else (mask * observed.sum(dim=1)).sum(dim=1)
                # Rates are (images, units), or (members, images, units) when members fit different sessions.
                total += self._step(data.train_images[batch], data.train_rates[..., batch, :], mask, observed) * weight
                seen += weight
            train_loss = total / seen.clamp_min(1.0)
        self.train_history.index_copy_(0, index.view(1), train_loss.view(1, -1))
        self.model.eval()
        with torch.no_grad():
            if self.refit_epochs is not None:
                # Refit: "improved" marks the epoch whose weights each member keeps.
                improved = self.refit_epochs == index + 1
                stop_loss = self.best_loss
            else:
                assert data.stop_images is not None and data.stop_rates is not None  # early stopping has a stopping set
                stop_loss = self._stop_score(data.stop_images, data.stop_rates, data.stop_mask, data.stop_observed)
                self.stop_history.index_copy_(0, index.view(1), stop_loss.view(1, -1))
                improved = (stop_loss < self.best_loss) & ~self.done
            self.best_loss.copy_(torch.where(improved, stop_loss, self.best_loss))
            self.best_epoch.copy_(torch.where(improved, index, self.best_epoch))
            self.since_best.copy_(torch.where(improved, 0, self.since_best + 1))
            if self.members is None:
                self.done.logical_or_(self.since_best >= self.config.patience)
            else:  # each member stops on its own patience, and freezes at its own epoch limit
                self.done.logical_or_(self.since_best >= self.members["patience"])
                self.done.logical_or_(index + 1 >= self.members["max_epochs"])
            for name, tensor in self.tracked.items():
                mask = improved.view(-1, *([1] * (tensor.dim() - 1)))
                self.best_state[name].copy_(torch.where(mask, tensor, self.best_state[name]))
            index.add_(1)

    def _graph(self) -> torch.cuda.CUDAGraph:
        """Run the warm-up epochs on a side stream, then capture one epoch (not run by capture)."""
        side = torch.cuda.Stream(self.data.device)
        side.wait_stream(torch.cuda.current_stream(self.data.device))
        with torch.cuda.stream(side):
            for _ in range(self.eager_before_graph):
                self.epoch()
        torch.cuda.current_stream(self.data.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.epoch()
        return graph

    def _graph_or_none(self) -> torch.cuda.CUDAGraph | None:
        try:
            return self._graph()
        except RuntimeError as error:  # e.g. a driver without graph support: the same epochs, eagerly
            warnings.warn(f"CUDA graph capture failed ({error}); training without graphs", RuntimeWarning, stacklevel=2)
            return None

    def run(self, progress):
        config = self.config
        epochs_run = self.max_epochs
        graph = self._graph_or_none() if self.use_graph else None
        first = int(self.epoch_index)
        for index in range(first, self.max_epochs):
            if graph is not None:
                graph.replay()
            else:
                self.epoch()
            if self.refit_epochs is not None:
                continue
            last = index == self.max_epochs - 1
            if (index + 1) % config.stop_check_every == 0 or last:
                if progress is not None:
                    progress(index + 1, self.max_epochs, float(self.best_loss.min()))
                if bool(self.done.all()):
                    epochs_run = index + 1
                    break
        self.model.set_sample_weight(None)
        self.model.core.training_noise = None
        with torch.no_grad():
            for name, tensor in self.tracked.items():
                tensor.copy_(self.best_state[name])
        data = self.data
        self.model.set_output_ceiling(data.train_images, data.train_mask, data.train_observed)
        train_loss = self.train_history[:epochs_run].cpu().numpy().astype(np.float64)
        if self.refit_epochs is not None:
            # Fused members train on together past their own epoch count; their weights did not.
            after = np.arange(epochs_run)[:, None] >= self.refit_epochs.cpu().numpy()[None, :]
            train_loss[after] = np.nan
            return self.model, {"refit_loss": train_loss}, self.best_epoch.cpu().numpy(), epochs_run
        history = {
            "train_loss": train_loss,
            "stop_loss": self.stop_history[:epochs_run].cpu().numpy().astype(np.float64),
        }
        return self.model, history, self.best_epoch.cpu().numpy(), epochs_run
