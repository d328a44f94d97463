"""Train CycleGAN-AM (paper Sec. 2.5): G+, G- and their discriminators around a frozen classifier.

Per batch the discriminators are updated first, then both generators. The images' labels are
never read. Each step draws random pairs (x_a, x_b) of training images: two permutations per
epoch, each a pure function of (seed, epoch) through DistributedSampler, so the data order needs
no saved iterator state and every rank of a DDP run takes its own shard. Where a patch holds no
image (beyond a nodule sub-volume) each step draws a new surround for it, as for the classifier.

The classifier's validation patients are left out of training; every ``validation_every`` steps
the generators are scored on them (generator_validation) and the best-scoring pair is kept in
the checkpoint beside the latest: export takes the best, so the choice is made on validation
data only.

Checkpoints hold everything the next step depends on (networks, optimisers, AMP scalers, step,
all RNG states, the running epoch averages), so a run interrupted and resumed ends with exactly
the weights of an uninterrupted one (single process; tested on CPU).

Launched by torchrun with WORLD_SIZE > 1 the four networks are wrapped in
DistributedDataParallel and only rank 0 writes checkpoints and logs. A resumed DDP run restores
rank 0's RNG states on every rank, so it is reproducible but not bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from CycleGANExplainLib.intensity import hu_change_to_normalised, normalise_hu
from CycleGANExplainLib.model_bundle import bundle_digest, load_bundle, resolve_device, sha256_of
from CycleGANExplainLib.networks import UNetGenerator

from .augment import same_nodule_view
from .checkpoint import capture_rng_states, load_checkpoint, restore_rng_states, save_checkpoint
from .config import TrainingConfig
from .dataset import BENIGN, MALIGNANT, PreparedDataset
from .losses import DSSIM, LossWeights, discriminator_loss, generator_loss
from .networks import PairedPatchDiscriminator
from .run_log import MetricsLog, Progress
from .train_classifier import (images_in_random_context, load_classifier, patient_validation_mask,
                               validation_split_seed)

CYCLEGAN_CHECKPOINT = "cyclegan.pt"
CYCLEGAN_METRICS = "cyclegan_metrics.jsonl"
VALIDATION_METRICS = "cyclegan_validation.jsonl"
VALIDATION_CHECKS_DIR = "validation-checks"  # the generators of every validation check
BATCHNORM_SEED = 1234  # the surrounds drawn for the BatchNorm statistics' patches
VALIDATION_BATCHNORM_PATCHES = 1024
NETWORK_NAMES = ("generator_pos", "generator_neg", "discriminator_pos", "discriminator_neg")
# Settings a resumed run may change: how long to train, how often to save and to validate.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "validation_every")


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_environment(device: str) -> Distributed:
    """torchrun's environment; joins the process group when there is more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, DistributedDataParallel) else network


def epoch_pairs(count: int, batch_size: int, seed: int, epoch: int, ranks: Distributed) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of (x_a, x_b) indices for one epoch: two independent shuffles."""
    batches = []
    for stream in (0, 1):
        sampler = DistributedSampler(range(count), num_replicas=ranks.world_size, rank=ranks.rank,
                                     shuffle=True, seed=2 * seed + stream, drop_last=True)
        sampler.set_epoch(epoch)
        indices = torch.tensor(list(sampler))
        full = len(indices) // batch_size * batch_size  # BatchNorm and the pairing want full batches
        batches.append(indices[:full].split(batch_size))
    return list(zip(*batches))


@contextlib.contextmanager
def _frozen(*networks: nn.Module) -> Iterator[None]:
    """No parameter gradients for these networks (they still pass gradients to their inputs)."""
    for network in networks:
        network.requires_grad_(False)
    try:
        yield
    finally:
        for network in networks:
            network.requires_grad_(True)


class CycleGANAMTrainer:
    """The four trained networks, their optimisers and one training step."""

    def __init__(self, config: TrainingConfig, classifier: nn.Module, device: str, ranks: Distributed,
                 also_maximised_for: Sequence[nn.Module] = ()):
        settings = config.cyclegan
        self.device, self.ranks = device, ranks
        self.amp = device.startswith("cuda")  # AMP and channels_last pay off only on a GPU
        memory_format = torch.channels_last if self.amp else torch.contiguous_format
        self.memory_format = memory_format
        torch.manual_seed(settings.seed)
        deadband = generator_deadband(settings.change_deadband_hu, config.hu_window)
        networks = {
            "generator_pos": UNetGenerator(settings.width, settings.residual_generators, deadband),
            "generator_neg": UNetGenerator(settings.width, settings.residual_generators, deadband),
            "discriminator_pos": PairedPatchDiscriminator(settings.width),
            "discriminator_neg": PairedPatchDiscriminator(settings.width),
        }
        self.networks: Dict[str, nn.Module] = {}
        for name, network in networks.items():
            network = network.to(device, memory_format=memory_format)
            if ranks.world_size > 1:
                network = DistributedDataParallel(network, device_ids=[ranks.local_rank] if self.amp else None)
            self.networks[name] = network
        if ranks.world_size > 1:  # same initial weights (DDP broadcasts them), different pair orders
            torch.manual_seed(settings.seed + ranks.rank)
        self.classifier = classifier.to(device, memory_format=memory_format).eval().requires_grad_(False)
        # L_AM's classifiers: the bundle's first, then any twins (the loss averages over them).
        self.am_classifiers = [self.classifier] + [
            other.to(device, memory_format=memory_format).eval().requires_grad_(False) for other in also_maximised_for]
        betas = (settings.beta1, settings.beta2)
        generators = [*self.networks["generator_pos"].parameters(), *self.networks["generator_neg"].parameters()]
        discriminators = [*self.networks["discriminator_pos"].parameters(),
                          *self.networks["discriminator_neg"].parameters()]
        self.optimiser_generators = torch.optim.Adam(generators, lr=settings.learning_rate, betas=betas)
        self.optimiser_discriminators = torch.optim.Adam(discriminators, lr=settings.learning_rate, betas=betas)
        self.scaler_generators = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.scaler_discriminators = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.dssim = DSSIM()
        self.activation_view_shift_px = settings.activation_view_shift_px
        self.weights = LossWeights(**settings.loss_weights, similarity_l1=settings.similarity_l1,
                                   activation_target_probability=settings.activation_target_probability,
                                   locality=settings.locality_l1, new_brightness=settings.new_brightness,
                                   brightness_threshold=float(normalise_hu(np.float32(settings.new_brightness_hu),
                                                                           config.hu_window)))

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def _malignancy(self, logits: torch.Tensor) -> float:
        return float(torch.softmax(logits.detach().float(), dim=1)[:, MALIGNANT].mean())

    def step(self, x_a: torch.Tensor, x_b: torch.Tensor, forbidden: Optional[torch.Tensor] = None) -> Dict[str, float]:
        """One batch: both discriminators, then both generators. Returns every loss term.

        ``forbidden`` [B, 1, H, W] marks the pixels of x_a the locality term keeps unchanged."""
        x_a = x_a.to(self.device, memory_format=self.memory_format)
        x_b = x_b.to(self.device, memory_format=self.memory_format)
        if forbidden is not None:
            forbidden = forbidden.to(self.device)
        g_pos, g_neg = self.networks["generator_pos"], self.networks["generator_neg"]
        d_pos, d_neg = self.networks["discriminator_pos"], self.networks["discriminator_neg"]
        for network in self.networks.values():
            network.train()

        with self._autocast():
            fake_pos, fake_neg = g_pos(x_a), g_neg(x_a)
            loss_d_pos = discriminator_loss(d_pos(x_b, fake_pos.detach()))
            loss_d_neg = discriminator_loss(d_neg(x_b, fake_neg.detach()))
        self.optimiser_discriminators.zero_grad(set_to_none=True)
        self.scaler_discriminators.scale(loss_d_pos + loss_d_neg).backward()
        self.scaler_discriminators.step(self.optimiser_discriminators)
        self.scaler_discriminators.update()

        # The updated discriminators judge the generators but are not trained by their loss; the
        # unwrapped modules keep DDP from waiting for discriminator gradients that never come.
        with _frozen(d_pos, d_neg), self._autocast():
            shift = self.activation_view_shift_px
            all_logits_pos = [classifier(same_nodule_view(fake_pos, shift)) for classifier in self.am_classifiers]
            all_logits_neg = [classifier(same_nodule_view(fake_neg, shift)) for classifier in self.am_classifiers]
            logits_pos, logits_neg = all_logits_pos[0], all_logits_neg[0]
            loss_pos, terms_pos = generator_loss(self.dssim, x_a, fake_pos, g_neg(fake_pos),
                                                 _unwrap(d_pos)(x_b, fake_pos), all_logits_pos, MALIGNANT, self.weights,
                                                 forbidden)
            loss_neg, terms_neg = generator_loss(self.dssim, x_a, fake_neg, g_pos(fake_neg),
                                                 _unwrap(d_neg)(x_b, fake_neg), all_logits_neg, BENIGN, self.weights,
                                                 forbidden)
        self.optimiser_generators.zero_grad(set_to_none=True)
        self.scaler_generators.scale(loss_pos + loss_neg).backward()
        self.scaler_generators.step(self.optimiser_generators)
        self.scaler_generators.update()

        with torch.no_grad(), self._autocast():
            logits_x = self.classifier(x_a)
        metrics = {"discriminator_pos": float(loss_d_pos.detach()), "discriminator_neg": float(loss_d_neg.detach())}
        metrics.update({f"generator_pos/{name}": value for name, value in terms_pos.items()})
        metrics.update({f"generator_neg/{name}": value for name, value in terms_neg.items()})
        metrics.update(p_x=self._malignancy(logits_x), p_pos=self._malignancy(logits_pos),
                       p_neg=self._malignancy(logits_neg))
        return metrics

    def state(self) -> Dict[str, object]:
        state = {name: _unwrap(network).state_dict() for name, network in self.networks.items()}
        state.update(
            optimiser_generators=self.optimiser_generators.state_dict(),
            optimiser_discriminators=self.optimiser_discriminators.state_dict(),
            scaler_generators=self.scaler_generators.state_dict(),
            scaler_discriminators=self.scaler_discriminators.state_dict(),
        )
        return state

    def load_state(self, state: Dict[str, object]) -> None:
        for name, network in self.networks.items():
            _unwrap(network).load_state_dict(state[name])
        self.optimiser_generators.load_state_dict(state["optimiser_generators"])
        self.optimiser_discriminators.load_state_dict(state["optimiser_discriminators"])
        self.scaler_generators.load_state_dict(state["scaler_generators"])
        self.scaler_discriminators.load_state_dict(state["scaler_discriminators"])


def _check_resumable(saved: Dict[str, object], config: TrainingConfig, patches_sha256: Optional[str]) -> None:
    current = config.to_dict()["cyclegan"]
    for key, value in saved["config"]["cyclegan"].items():
        if key not in RESUMABLE_CHANGES and current[key] != value:
            raise ValueError(f"Cannot resume: cyclegan.{key} was {value!r} in the checkpoint, now {current[key]!r}.")
    if saved["patches_sha256"] != patches_sha256:
        raise ValueError("Cannot resume: the prepared dataset differs from the one the checkpoint was trained on.")


def _mean_record(sums: Dict[str, float], count: int) -> Dict[str, float]:
    return {name: value / count for name, value in sums.items() if name != "seconds"}


@dataclass
class _RunState:
    """What a checkpoint holds beside the networks and optimisers, so that a resumed run goes on
    exactly where the saved one was."""

    context_rng: np.random.Generator  # draws the surrounds of the training patches
    step: int = 0
    seconds: float = 0.0
    sums: Dict[str, float] = field(default_factory=dict)  # the running epoch's metric sums
    count: int = 0  # steps in those sums
    commands: List[Optional[str]] = field(default_factory=list)
    best: Dict[str, object] = field(default_factory=dict)  # the best-scoring generators so far
    warm_start: Optional[Dict[str, object]] = None  # the run whose networks this one started from

    def record(self, metrics: Dict[str, float]) -> None:
        self.step += 1
        self.seconds += metrics["seconds"]
        self.sums = {name: self.sums.get(name, 0.0) + value for name, value in metrics.items()}
        self.count += 1


def _training_device(device: str) -> Tuple[str, Distributed]:
    """The resolved device (under torchrun: this rank's GPU) and the ranks."""
    device, device_warning = resolve_device(device)
    ranks = distributed_from_environment(device)
    if ranks.world_size > 1 and device.startswith("cuda"):
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(device)
    if device_warning and ranks.is_main:
        print(device_warning)
    return device, ranks


def _start_or_resume(trainer: "CycleGANAMTrainer", config: TrainingConfig, checkpoint_path: Path,
                     patches_sha256: Optional[str], resume: bool, ranks: Distributed,
                     twin_records: List[Dict[str, str]]) -> _RunState:
    """A fresh run, or with ``resume`` the saved one restored into ``trainer`` (RNG states included)."""
    run = _RunState(context_rng=np.random.default_rng(config.cyclegan.seed))
    if resume and checkpoint_path.is_file():
        saved = load_checkpoint(checkpoint_path, "cyclegan")
        _check_resumable(saved, config, patches_sha256)
        saved_twins = [record["sha256"] for record in saved.get("activation_twins", [])]
        if saved_twins != [record["sha256"] for record in twin_records]:
            raise ValueError("Cannot resume: the run maximised the activation of other classifiers "
                             f"({len(saved_twins)} besides the bundle's); pass the same --also-maximise-for files.")
        trainer.load_state(saved)
        restore_rng_states(saved["rng"])
        run.context_rng.bit_generator.state = saved["context_rng"]
        run.step, run.seconds, run.commands = saved["step"], saved["seconds"], list(saved["commands"])
        run.sums, run.count = dict(saved["epoch_sums"]), saved["epoch_count"]
        run.best = dict(saved.get("best") or {})
        run.warm_start = saved.get("warm_start")
    elif checkpoint_path.exists() and ranks.is_main:
        raise FileExistsError(f"{checkpoint_path} exists; pass resume=True (--resume) to continue it.")
    return run


class _GeneratorValidation:
    """The periodic check of the generators on the classifier's validation patients
    (generator_validation), which keeps the best-scoring pair in the run's state."""

    def __init__(self, fit: PreparedDataset, validation: PreparedDataset, hu_window: Sequence[float],
                 out_dir: Path) -> None:
        from .generator_validation import validation_set

        self.held_out = validation_set(validation, hu_window)
        self.batchnorm_images = validation_batchnorm_images(fit, hu_window)
        self.log = MetricsLog(out_dir / VALIDATION_METRICS)
        self.checks_dir = out_dir / VALIDATION_CHECKS_DIR

    def check(self, trainer: "CycleGANAMTrainer", run: _RunState, batch_size: int) -> None:
        from .generator_validation import validate_generators

        figures = validate_generators(_unwrap(trainer.networks["generator_pos"]),
                                      _unwrap(trainer.networks["generator_neg"]), trainer.classifier, self.held_out,
                                      self.batchnorm_images, batch_size, trainer.device)
        self.log.write({"step": run.step, **figures})
        # Every checked pair is kept, so that runs can be compared and re-chosen afterwards on the
        # same validation patients (select-generators), not only by the score used during training.
        save_checkpoint({"kind": "generator-check", "step": run.step, "validation": figures,
                         **{name: _unwrap(trainer.networks[name]).state_dict()
                            for name in ("generator_pos", "generator_neg")}},
                        self.checks_dir / f"step-{run.step:06d}.pt")
        if figures["score"] > run.best.get("score", -np.inf):
            run.best = {"step": run.step, "score": figures["score"], "validation": figures,
                        **{name: copy.deepcopy(_unwrap(trainer.networks[name]).state_dict())
                           for name in ("generator_pos", "generator_neg")}}


def _save(trainer: "CycleGANAMTrainer", run: _RunState, config: TrainingConfig, hu_window: Sequence[float],
          classifier_checkpoint: Union[str, Path], patches_sha256: Optional[str], checkpoint_path: Path,
          twin_records: List[Dict[str, str]]) -> None:
    settings = config.cyclegan
    state = trainer.state()
    state.update(
        kind="cyclegan", step=run.step, seconds=run.seconds, rng=capture_rng_states(), epoch_sums=run.sums,
        epoch_count=run.count, width=settings.width, hu_window=list(hu_window), config=config.to_dict(),
        context_rng=run.context_rng.bit_generator.state, best=run.best,
        residual_generators=settings.residual_generators,
        classifier_checkpoint=str(classifier_checkpoint), classifier_sha256=sha256_of(Path(classifier_checkpoint)),
        patches_sha256=patches_sha256, seed=settings.seed, commands=run.commands,
        activation_twins=twin_records, warm_start=run.warm_start,
    )
    save_checkpoint(state, checkpoint_path)


def train_cyclegan(
    dataset: PreparedDataset,
    classifier_checkpoint: Union[str, Path],
    config: TrainingConfig,
    out_dir: Union[str, Path],
    device: str = "auto",
    resume: bool = False,
    stop_at_step: Optional[int] = None,
    progress: bool = True,
    command: Optional[str] = None,
    also_maximised_for: Sequence[Union[str, Path]] = (),
    warm_start: Optional[Union[str, Path]] = None,
    allow_unknown_bundle: bool = False,
) -> Path:
    """Train (or, with ``resume``, continue) CycleGAN-AM; returns the checkpoint's path.

    ``stop_at_step`` ends this run early after checkpointing, as an interruption would (for
    wall-time-limited jobs: run again with ``resume``). ``also_maximised_for`` names classifier
    checkpoints (twins of the bundle's, the same validation patients) whose outputs L_AM
    maximises beside the bundle's classifier's. ``warm_start``, another run's cyclegan.pt with the
    same classifier, data and networks, gives a new run its four networks and optimiser states
    (e.g. to add twins to a run already trained: training from scratch is hours on a CPU); the
    run records it, and its steps count from 0. ``warm_start`` may instead be a bundle folder whose
    classifier is this run's (`import-classifier`): its generators only, the discriminators and
    optimisers fresh (a bundle keeps nothing else); ``allow_unknown_bundle`` loads one not shipped.
    """
    settings = config.cyclegan
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CYCLEGAN_CHECKPOINT
    device, ranks = _training_device(device)
    classifier_state = load_checkpoint(classifier_checkpoint, "classifier")
    hu_window = classifier_state["hu_window"]  # the classifier's window is the bundle's
    fit, validation = split_like_classifier(dataset, classifier_state)
    pairs_per_epoch = len(epoch_pairs(len(fit), settings.batch_size, settings.seed, 0, ranks))
    if pairs_per_epoch == 0:
        raise ValueError(f"{len(fit)} training images are too few for batches of {settings.batch_size}.")

    twins = same_patient_classifiers(classifier_state, also_maximised_for)
    trainer = CycleGANAMTrainer(config, load_classifier(classifier_state), device, ranks,
                                [load_classifier(state) for state in twins.values()])
    patches_sha256 = dataset.manifest.get("patches_sha256")
    twin_records = [{"path": str(path), "sha256": sha256_of(Path(path))} for path in twins]
    run = _start_or_resume(trainer, config, checkpoint_path, patches_sha256, resume, ranks, twin_records)
    if run.step == 0 and warm_start is not None:
        run.warm_start = (_warm_start_from_bundle(trainer, Path(warm_start), config, classifier_state,
                                                  allow_unknown_bundle)
                          if Path(warm_start).is_dir() else
                          _warm_start(trainer, Path(warm_start), config, classifier_checkpoint, patches_sha256))
    run.commands.append(command)
    validation_check = (_GeneratorValidation(fit, validation, hu_window, out_dir)
                        if settings.validation_every > 0 and ranks.is_main and len(validation) > 0 else None)
    log = MetricsLog(out_dir / CYCLEGAN_METRICS if ranks.is_main else None)
    bar = Progress(settings.steps, "CycleGAN-AM steps", initial=run.step, enabled=progress and ranks.is_main)
    pairs, pairs_epoch = [], -1
    while run.step < settings.steps:
        step_started = time.perf_counter()
        epoch, index = divmod(run.step, pairs_per_epoch)
        if epoch != pairs_epoch:
            pairs, pairs_epoch = epoch_pairs(len(fit), settings.batch_size, settings.seed, epoch, ranks), epoch
        batch_a, batch_b = pairs[index]
        if settings.locality_l1:
            x_a, forbidden = images_and_forbidden_change(fit, batch_a.numpy(), hu_window, run.context_rng,
                                                         settings.locality_mm)
        else:
            x_a, forbidden = images_in_random_context(fit, batch_a.numpy(), hu_window, run.context_rng), None
        x_b = images_in_random_context(fit, batch_b.numpy(), hu_window, run.context_rng)
        metrics = trainer.step(x_a, x_b, forbidden)
        metrics["seconds"] = time.perf_counter() - step_started
        run.record(metrics)
        bar.update(1, p_pos=metrics["p_pos"], p_neg=metrics["p_neg"])
        step = run.step
        if step % pairs_per_epoch == 0 or step == settings.steps:
            log.write({"epoch": epoch, "step": step, "steps_averaged": run.count, "seconds": run.sums["seconds"],
                       **_mean_record(run.sums, run.count)})
            run.sums, run.count = {}, 0
        if validation_check is not None and (step % settings.validation_every == 0 or step == settings.steps):
            validation_check.check(trainer, run, settings.batch_size)
        if (step % settings.checkpoint_every == 0 or step == settings.steps or step == stop_at_step) and ranks.is_main:
            _save(trainer, run, config, hu_window, classifier_checkpoint, patches_sha256, checkpoint_path, twin_records)
        if step == stop_at_step:
            break
    bar.close()
    return checkpoint_path


def _warm_start(trainer: "CycleGANAMTrainer", path: Path, config: TrainingConfig,
                classifier_checkpoint: Union[str, Path], patches_sha256: Optional[str]) -> Dict[str, object]:
    """Load another run's networks and optimisers into ``trainer``; what the run records of it."""
    saved = load_checkpoint(path, "cyclegan")
    if saved["classifier_sha256"] != sha256_of(Path(classifier_checkpoint)):
        raise ValueError(f"Cannot warm-start from {path}: it was trained against another classifier.")
    if saved["patches_sha256"] != patches_sha256:
        raise ValueError(f"Cannot warm-start from {path}: it was trained on other patches (dataset).")
    current = config.to_dict()["cyclegan"]
    for key in ("width", "residual_generators"):
        if saved["config"]["cyclegan"][key] != current[key]:
            raise ValueError(f"Cannot warm-start from {path}: cyclegan.{key} is {saved['config']['cyclegan'][key]!r} "
                             f"there, {current[key]!r} here.")
    trainer.load_state(saved)
    return {"path": str(path), "sha256": sha256_of(path), "step": saved["step"], "seconds": saved["seconds"]}


def _warm_start_from_bundle(trainer: "CycleGANAMTrainer", bundle_dir: Path, config: TrainingConfig,
                            classifier_state: Dict[str, object], allow_unknown: bool) -> Dict[str, object]:
    """Load a bundle's G+ and G- into ``trainer`` (refused unless the bundle's classifier computes
    this run's and its generators are the configured ones); what the run records of it."""
    from .export import generators_of_bundle  # export imports this module's helpers

    bundle = load_bundle(bundle_dir, "cpu", allow_unknown=allow_unknown)
    refused = f"Cannot warm-start from the bundle {bundle_dir}"
    if list(bundle.metadata.hu_window) != list(classifier_state["hu_window"]):
        raise ValueError(f"{refused}: its HU window {list(bundle.metadata.hu_window)} is not the classifier's "
                         f"{list(classifier_state['hu_window'])}.")
    probe = torch.rand(4, 1, bundle.metadata.patch_size_px, bundle.metadata.patch_size_px,
                       generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        if not torch.allclose(bundle.classifier(probe), load_classifier(classifier_state)(probe), atol=1e-4):
            raise ValueError(f"{refused}: its classifier is not this run's (import it with import-classifier).")
    described = bundle.metadata.raw["architecture"]["generator"]
    current = config.to_dict()["cyclegan"]
    there = {"width": int(described["width"]), "residual_generators": "residual" in described.get("output", ""),
             "change_deadband_hu": float(described.get("change_deadband_hu", 0.0))}
    for key, value in there.items():
        if value != current[key]:
            raise ValueError(f"{refused}: cyclegan.{key} is {value!r} there, {current[key]!r} here.")
    if float(described.get("change_gain", 1.0)) != 1.0:
        raise ValueError(f"{refused}: its change gain was set at export; warm-start from the bundle it copies.")
    for role, generator in zip(("generator_pos", "generator_neg"), generators_of_bundle(bundle)):
        _unwrap(trainer.networks[role]).load_state_dict(generator.state_dict())
    return {"bundle": f"{bundle.metadata.name} {bundle.metadata.version}", "path": str(bundle_dir),
            "digest": bundle_digest(bundle_dir),
            "networks": "the bundle's generators; discriminators and optimisers started fresh"}


def same_patient_classifiers(classifier_state: Dict[str, object], paths: Sequence[Union[str, Path]]
                      ) -> Dict[Path, Dict[str, object]]:
    """The twin classifiers' checkpoints by path, refused unless each held out exactly the bundle
    classifier's validation patients and used its HU window: the generators are chosen on those
    patients, so no classifier that drives them may have trained on them."""
    twins: Dict[Path, Dict[str, object]] = {}
    for path in map(Path, paths):
        state = load_checkpoint(path, "classifier")
        if state.get("validation_patients") != classifier_state.get("validation_patients"):
            raise ValueError(f"{path} held out other validation patients than the bundle's classifier; train it "
                             "with the same classifier.validation_seed and validation_fraction.")
        if list(state["hu_window"]) != list(classifier_state["hu_window"]):
            raise ValueError(f"{path} uses the HU window {state['hu_window']}, the bundle's classifier "
                             f"{classifier_state['hu_window']}.")
        twins[path] = state
    return twins


def images_and_forbidden_change(fit: PreparedDataset, indices: np.ndarray, hu_window: Sequence[float],
                                rng: np.random.Generator, locality_mm: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """The patches at ``indices`` in a fresh random surround (as images_in_random_context draws them),
    normalised [B, 1, H, W], and where the generators may not change them [B, 1, H, W] (1.0): beyond the
    real image, and farther than ``locality_mm`` from the nodule's mask (from the patch centre, the
    click, on a plane that misses the mask)."""
    from .context_fill import random_context_and_visible
    from .nodule_regions import within_mm_of_centre, within_mm_of_masks

    filled, visible = random_context_and_visible(fit.images_hu[indices], fit.valid[indices], fit.masks[indices], rng)
    masks = fit.masks[indices].astype(bool)
    near = within_mm_of_masks(masks, locality_mm)
    no_mask = ~masks.any(axis=(1, 2))
    near[no_mask] = within_mm_of_centre(locality_mm)
    forbidden = ~(visible & near)
    return (torch.from_numpy(normalise_hu(filled, hu_window))[:, None],
            torch.from_numpy(forbidden.astype(np.float32))[:, None])


def split_like_classifier(dataset: PreparedDataset, classifier_state: Dict[str, object]
                          ) -> Tuple[PreparedDataset, PreparedDataset]:
    """The training split's (fitting, validation) parts, split by patient exactly as the classifier's."""
    settings = classifier_state["config"]["classifier"]
    train = dataset.subset("train")
    held_out = patient_validation_mask(train.patient_ids, train.labels, settings["validation_fraction"],
                                       validation_split_seed(settings))
    return train.select(~held_out), train.select(held_out)


def batchnorm_patches(fit: PreparedDataset, hu_window) -> torch.Tensor:
    """The fitting patches with seeded random surrounds, normalised: what the generators' BatchNorm
    statistics are recomputed on (they saw such surrounds in training)."""
    return images_in_random_context(fit, np.arange(len(fit)), hu_window, np.random.default_rng(BATCHNORM_SEED))


def validation_batchnorm_images(fit: PreparedDataset, hu_window) -> torch.Tensor:
    """The fixed subset of batchnorm_patches a validation check recomputes BatchNorm on: it keeps
    each check short (export recomputes on every fitting patch)."""
    return batchnorm_patches(fit, hu_window)[
        np.random.default_rng(BATCHNORM_SEED).permutation(len(fit))[:VALIDATION_BATCHNORM_PATCHES]]


def generator_deadband(change_deadband_hu: float, hu_window: Sequence[float]) -> float:
    """UNetGenerator's change_deadband for a deadband given in HU (config, export), refused in HU when negative."""
    if change_deadband_hu < 0:
        raise ValueError(f"The change deadband must be 0 HU or more, got {change_deadband_hu:g} HU.")
    return hu_change_to_normalised(change_deadband_hu, hu_window)


def change_deadband_hu_of(checkpoint: Dict[str, object]) -> float:
    """The change deadband (HU) a CycleGAN-AM run trained with (0 for runs from before it existed)."""
    return float(checkpoint["config"]["cyclegan"].get("change_deadband_hu", 0.0))


def load_generators(checkpoint: Dict[str, object], which: str = "best",
                    check: Optional[Dict[str, object]] = None,
                    change_deadband_hu: Optional[float] = None) -> Tuple[UNetGenerator, UNetGenerator]:
    """G+ and G- of a checkpoint written by train_cyclegan, in eval mode on CPU.

    ``which="best"`` takes the pair with the best validation score when the run validated
    (otherwise the latest); ``"last"`` the latest. ``check``, one of the run's saved validation
    checks (select-generators' choice), takes that pair instead. ``change_deadband_hu``: the
    generators' deadband (UNetGenerator) instead of the run's.
    """
    if checkpoint.get("kind") != "cyclegan":
        raise ValueError("Not a CycleGAN-AM checkpoint (made by train-cyclegan).")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', not {which!r}.")
    if check is not None and (check.get("kind") != "generator-check" or int(check["step"]) > int(checkpoint["step"])):
        raise ValueError(f"The generators given are not a validation check of this run (step {check.get('step')} "
                         f"of a run at step {checkpoint['step']}).")
    source = check if check is not None else (
        checkpoint.get("best") if which == "best" and checkpoint.get("best") else checkpoint)
    if change_deadband_hu is None:
        change_deadband_hu = change_deadband_hu_of(checkpoint)
    deadband = generator_deadband(change_deadband_hu, checkpoint["hu_window"])
    generators = []
    for name in ("generator_pos", "generator_neg"):
        generator = UNetGenerator(checkpoint["width"], bool(checkpoint.get("residual_generators", False)), deadband)
        generator.load_state_dict(source[name])
        generators.append(generator.eval())
    return generators[0], generators[1]


def recompute_batchnorm_statistics(generator: UNetGenerator, images: torch.Tensor, batch_size: int) -> UNetGenerator:
    """Replace a generator's BatchNorm running statistics by their average over real ``images``.

    During training each generator normalises two kinds of batch: real patches and the other
    generator's fakes (the cycle). Its running statistics are a moving average over both, so in
    eval mode, where it only ever sees real patches, it is normalised differently from how it was
    trained: on the shipped run G-(x) reached a malignancy output of 0.11 with batch statistics
    but 0.28 with the running ones. Recomputing them on real training patches (precise BN,
    torch.optim.swa_utils.update_bn: a cumulative average, weights untouched) removes that gap.
    """
    from torch.optim.swa_utils import update_bn

    batches = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
    update_bn(batches, generator)
    return generator.eval()
