"""Weakly supervised NetVLAD training (``vpr-train fit``).

Each step takes a few training queries; for each, the best positive and the hardest
negatives are mined from a descriptor cache (:mod:`.mining`), all images are augmented
photometrically, and the triplet ranking loss (:mod:`.loss`) is minimised. The cache is
refreshed every ``refresh_every`` queries. After every epoch the model is checkpointed
(atomically, with optimizer and mining state, so ``--resume`` continues exactly) and,
with a validation set, evaluated.

Multi-process: launch with ``torchrun --nproc_per_node N``; each process trains on its
share of the queries (DDP averages gradients) and computes its share of the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_edge.cli.arg_types import (
    fraction_up_to_one,
    non_negative_float,
    positive_float,
    positive_int,
)
from vpr_edge.cli.help_format import HelpFormatter
from vpr_edge.cli.output import TO_STDOUT
from vpr_edge.errors import InvalidInputError
from vpr_edge.paths import expanded_path

from . import distributed
from .augment import AugmentConfig, augment
from .checkpoint import load_checkpoint, save_checkpoint
from .datasets.places import RetrievalDataset
from .evaluate import RecallResult, evaluate
from .image_bank import ImageBank
from .loss import triplet_ranking_loss
from .mining import DescriptorCache, MiningConfig, TripletMiner
from .model import VPRModel

log = logging.getLogger("vpr_edge.training")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the paper's, scaled for small robot datasets).

    Attributes:
        epochs: passes over the training queries.
        queries_per_step: training tuples per optimiser step (the paper uses 4).
        optimizer: ``"adam"`` or ``"sgd"`` (momentum ``momentum``).
        lr, weight_decay, lr_step_epochs, lr_gamma: learning rate, L2 penalty, and a step
            schedule multiplying the rate by ``lr_gamma`` every ``lr_step_epochs``.
        margin: triplet margin m (0.1 in the paper).
        refresh_every: queries between descriptor-cache refreshes.
        train_height, train_width: image size while training (None: the model's size; a
            smaller size trains faster on a CPU).
        freeze_batchnorm: keep every BatchNorm in eval mode (small batches make batch
            statistics noisy, and the cache is computed in eval mode).
        seed: seeds torch, numpy and mining.
    """

    epochs: int = 10
    queries_per_step: int = 4
    optimizer: str = "adam"
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    margin: float = 0.1
    refresh_every: int = 250
    mining: MiningConfig = field(default_factory=MiningConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train_height: int | None = None
    train_width: int | None = None
    freeze_batchnorm: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise InvalidInputError(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.epochs < 1 or self.queries_per_step < 1 or self.refresh_every < 1:
            raise InvalidInputError("epochs, queries_per_step and refresh_every must be >= 1")
        checks = {  # (each refused value made torch fail mid-run, or trained nothing)
            "lr": 0 < self.lr < math.inf,
            "lr_step_epochs": self.lr_step_epochs >= 1,
            "lr_gamma": 0 < self.lr_gamma <= 1,
            "weight_decay": 0 <= self.weight_decay < math.inf,
            "margin": 0 < self.margin < math.inf,
            "train_height": self.train_height is None or self.train_height >= 1,
            "train_width": self.train_width is None or self.train_width >= 1,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise InvalidInputError(
                f"{wrong[0]} {getattr(self, wrong[0])!r} is out of range (lr, margin > 0; "
                "lr_gamma in (0, 1]; weight_decay >= 0; lr_step_epochs, train size >= 1)")


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float
    images_per_second: float
    recall: dict[str, float] | None = None


@dataclass
class TrainResult:
    history: list[EpochRecord]
    skipped_queries: int
    peak_memory_mb: float
    checkpoint: Path
    main_process: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"history": [asdict(h) for h in self.history],
                "skipped_queries": self.skipped_queries,
                "peak_memory_mb": self.peak_memory_mb, "checkpoint": str(self.checkpoint)}


class Trainer:
    """Holds the model, optimiser, miner and image bank for one training run."""

    def __init__(self, model: VPRModel, dataset: RetrievalDataset, config: TrainConfig,
                 group: distributed.ProcessGroup) -> None:
        self.model = model
        self.dataset = dataset
        self.config = config
        self.group = group
        pre = model.config.preprocess
        self.height = config.train_height or pre.input_height
        self.width = config.train_width or pre.input_width
        self.bank = ImageBank(self.height, self.width)
        self.progress = False  # progress bars of the cache refreshes
        self.miner = TripletMiner(dataset, MiningConfig(**{**asdict(config.mining),
                                                           "seed": config.mining.seed
                                                           + group.rank}))
        if len(self.miner.usable_queries()) == 0:
            raise InvalidInputError(f"{dataset.name}: no training query is usable: "
                                    + self.miner.why_unusable(dataset))
        self.cache = DescriptorCache()
        params = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=config.lr, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.lr_step_epochs, gamma=config.lr_gamma)
        self.network: torch.nn.Module = model
        if group.active:
            self.network = torch.nn.parallel.DistributedDataParallel(model)
        mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        self._mean, self._std = mean, std
        self.generator = torch.Generator().manual_seed(config.seed * 1000 + group.rank)

    # -- model modes ---------------------------------------------------------------------
    def _train_mode(self) -> None:
        self.model.train()
        if self.config.freeze_batchnorm:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self._mean) / self._std

    # -- cache ---------------------------------------------------------------------------
    @torch.no_grad()
    def describe_paths(self, paths: tuple[Path, ...], batch: int = 16,
                       desc: str = "describe") -> np.ndarray:
        """Descriptors (eval mode, no augmentation) of this process's share, gathered; a
        transient progress bar when ``self.progress``."""
        from tqdm import tqdm

        self.model.eval()
        mine = list(range(self.group.rank, len(paths), self.group.world))
        out = [np.zeros((0, self.model.dim), np.float32)]
        for start in tqdm(range(0, len(mine), batch), desc=desc, unit="batch", leave=False,
                          disable=not self.progress):
            images = self.bank.batch([paths[i] for i in mine[start:start + batch]])
            x = self._normalise(images.permute(0, 3, 1, 2).float() / 255.0)
            out.append(self.model(x).numpy())
        return distributed.gather_rows(np.concatenate(out), len(paths), self.group)

    def refresh_cache(self) -> None:
        self.cache.refresh(
            lambda: self.describe_paths(self.dataset.database.paths,
                                        desc="descriptor cache: database"),
            lambda: self.describe_paths(self.dataset.queries.paths,
                                        desc="descriptor cache: queries"))

    # -- training ------------------------------------------------------------------------
    def step(self, queries: list[int]) -> float:
        cfg = self.config
        triplets = [self.miner.triplet(q, self.cache) for q in queries]
        db, qs = self.dataset.database.paths, self.dataset.queries.paths
        paths = []
        for t in triplets:
            paths += [qs[t.query], db[t.positive], *[db[n] for n in t.negatives]]
        images = self.bank.batch(paths).permute(0, 3, 1, 2).float() / 255.0
        images = augment(images, cfg.augment, self.generator)
        self._train_mode()
        out = self.network(self._normalise(images))
        out = out.view(len(triplets), 2 + cfg.mining.num_negatives, -1)
        loss = triplet_ranking_loss(out[:, 0], out[:, 1], out[:, 2:], margin=cfg.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def epoch_queries(self, epoch: int) -> list[int]:
        usable = self.miner.usable_queries()
        order = np.random.default_rng(self.config.seed + epoch).permutation(usable)
        return order[self.group.rank::self.group.world].tolist()

    def state(self, epoch: int, history: list[EpochRecord]) -> dict[str, Any]:
        return {"epoch": epoch, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "miner": self.miner.state(),
                "history": [asdict(h) for h in history], "config": _jsonable(asdict(self.config)),
                "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state()}

    def load_state(self, state: dict[str, Any]) -> tuple[int, list[EpochRecord]]:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.miner.load_state(state["miner"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        return int(state["epoch"]), [EpochRecord(**h) for h in state["history"]]


def dataset_files_digest(dataset: RetrievalDataset) -> str:
    """sha256 of the training images' file names in order (database, then queries): tells
    two datasets of the same size apart, and stays the same when their folders move."""
    names = [Path(p).name for p in (*dataset.database.paths, *dataset.queries.paths)]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def validate(model: VPRModel, dataset: RetrievalDataset, bank: ImageBank,
             progress: bool = False) -> RecallResult:
    """Recall@1/5/10 of ``model`` on ``dataset`` (eval mode, exact search); ``progress``: a
    transient progress bar."""
    from tqdm import tqdm

    pre = model.config.preprocess
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    model.eval()

    @torch.no_grad()
    def describe(paths, desc: str) -> np.ndarray:
        out = []
        for start in tqdm(range(0, len(paths), 16), desc=desc, unit="batch", leave=False,
                          disable=not progress):
            x = bank.batch(paths[start:start + 16]).permute(0, 3, 1, 2).float() / 255.0
            out.append(model((x - mean) / std).numpy())
        return np.concatenate(out)

    return evaluate(describe(dataset.queries.paths, "validation: queries"),
                    describe(dataset.database.paths, "validation: database"),
                    dataset.positives(), ns=(1, 5, 10), method=model.config.name,
                    dataset=dataset.name)


def train(model: VPRModel, dataset: RetrievalDataset, config: TrainConfig, *, output: Path,
          validation: RetrievalDataset | None = None, resume: dict[str, Any] | None = None,
          provenance: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Train ``model`` on ``dataset``; checkpoint to ``output`` after every epoch."""
    from tqdm import tqdm

    group = distributed.setup()
    torch.manual_seed(config.seed)
    trainer = Trainer(model, dataset, config, group)
    trainer.progress = progress and group.main
    start_epoch, history = (0, [])
    if resume is not None:
        start_epoch, history = trainer.load_state(resume)
        log.info("resuming after epoch %d", start_epoch)
    if trainer.miner.skipped and group.main:
        log.warning("%d of %d training queries have no positive within %s %s and are skipped",
                    trainer.miner.skipped, len(dataset.queries), dataset.radii.pos_radius,
                    dataset.unit)
    val_bank = ImageBank(trainer.height, trainer.width) if validation is not None else None
    recall_text = "-"
    for epoch in range(start_epoch + 1, config.epochs + 1):
        queries = trainer.epoch_queries(epoch)
        tic, losses, images = time.perf_counter(), [], 0
        steps = range(0, len(queries), config.queries_per_step)
        bar = tqdm(steps, desc=f"epoch {epoch}/{config.epochs}", unit="step",
                   disable=not (progress and group.main))
        since_refresh = config.refresh_every
        for start in bar:
            if since_refresh >= config.refresh_every:
                trainer.refresh_cache()
                since_refresh = 0
            batch = queries[start:start + config.queries_per_step]
            losses.append(trainer.step(batch))
            since_refresh += len(batch) * group.world
            images += len(batch) * (2 + config.mining.num_negatives)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", recall=recall_text)
        trainer.scheduler.step()
        seconds = time.perf_counter() - tic
        record = EpochRecord(epoch=epoch,
                             loss=distributed.average(float(np.mean(losses)), group),
                             seconds=round(seconds, 2),
                             images_per_second=round(images * group.world / seconds, 2))
        if validation is not None and group.main:
            result = validate(model, validation, val_bank, progress=progress)
            record.recall = {f"R@{n}": round(r, 4) for n, r in result.recalls.items()}
            recall_text = f"{result.recalls[1]:.3f}"
        history.append(record)
        if group.main:
            log.info("epoch %d: loss %.4f, %.1f img/s%s", epoch, record.loss,
                     record.images_per_second,
                     f", R@1 {record.recall['R@1']:.3f}" if record.recall else "")
            save_checkpoint(output, model, provenance={**(provenance or {}),
                                                       "made_by": "vpr-train fit",
                                                       "epochs_done": epoch},
                            training_state=trainer.state(epoch, history))
        distributed.barrier(group)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    distributed.teardown(group)
    return TrainResult(history, trainer.miner.skipped, round(peak, 1), output, group.main)


# -- command line -----------------------------------------------------------------------------

def add_fit_parser(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "fit", formatter_class=HelpFormatter,
        help="train NetVLAD with the paper's weakly supervised triplet ranking loss",
        description=__doc__.splitlines()[0] + " Works on one process or under torchrun.",
    )
    data = p.add_argument_group("training data (give one)")
    data.add_argument("--manifest", type=expanded_path, help="CSV manifest (see the README)")
    data.add_argument("--frame-aligned", nargs=2, type=expanded_path,
                      metavar=("DATABASE", "QUERIES"),
                      help="two folders of the same route (same file name = same place)")
    data.add_argument("--span", nargs=2, type=float, default=(0.0, 1.0), metavar=("FROM", "TO"),
                      help="part of a frame-aligned route used for training (fractions)")
    data.add_argument("--pittsburgh", type=expanded_path, help="dbStruct .mat file")
    data.add_argument("--image-root", type=expanded_path, help="image folder for --pittsburgh")
    val = p.add_argument_group("validation (optional, evaluated every epoch)")
    val.add_argument("--val-span", nargs=2, type=float, default=None, metavar=("FROM", "TO"),
                     help="part of the frame-aligned route used for validation")
    val.add_argument("--val-manifest", type=expanded_path, default=None, help="CSV manifest")
    p.add_argument("--init", type=expanded_path, default=None,
                   help="checkpoint to start from (default: `vpr-train init` on the training "
                        "database images)")
    p.add_argument("--resume", type=expanded_path, default=None,
                   help="continue an interrupted run from its checkpoint")
    p.add_argument("--output", "-o", type=expanded_path, required=True, help="checkpoint to write")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs in all (default: {d.epochs}; with --resume, the run's)")
    p.add_argument("--queries-per-step", type=positive_int, default=d.queries_per_step,
                   help="training tuples per optimiser step")
    p.add_argument("--negatives", type=positive_int, default=d.mining.num_negatives,
                   help="hard negatives per tuple")
    p.add_argument("--negative-pool", type=positive_int, default=d.mining.negative_pool,
                   help="definite negatives sampled per query before picking the hardest")
    p.add_argument("--refresh-every", type=positive_int, default=d.refresh_every,
                   help="queries between descriptor-cache refreshes")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer, help="optimiser")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="learning rate")
    p.add_argument("--weight-decay", type=non_negative_float, default=d.weight_decay,
                   help="L2 penalty")
    p.add_argument("--lr-step", type=positive_int, default=d.lr_step_epochs,
                   help="epochs between learning-rate decays")
    p.add_argument("--lr-gamma", type=fraction_up_to_one, default=d.lr_gamma,
                   help="learning-rate decay")
    p.add_argument("--margin", type=positive_float, default=d.margin, help="triplet margin")
    p.add_argument("--train-size", type=positive_int, nargs=2, default=None, metavar=("H", "W"),
                   help="training image size (default: the model's)")
    p.add_argument("--trainable-stages", type=int, default=None,
                   help="backbone stages trained (default: the checkpoint's setting)")
    p.add_argument("--no-augment", action="store_true", help="disable photometric augmentation")
    p.add_argument("--pos-radius", type=positive_float, default=None,
                   help="training positives within this distance (m, or frames)")
    p.add_argument("--neg-radius", type=positive_float, default=None,
                   help="definite negatives beyond this distance (m, or frames)")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", type=expanded_path,
                   default=None, help="write the training history here" + TO_STDOUT)
    p.set_defaults(run=run_fit)


def _datasets(args: argparse.Namespace) -> tuple[RetrievalDataset, RetrievalDataset | None]:

    from .datasets.frame_aligned import frame_aligned_dataset
    from .datasets.manifest import read_manifest
    from .datasets.pittsburgh import read_pittsburgh

    given = [n for n in ("manifest", "frame_aligned", "pittsburgh") if getattr(args, n)]
    if len(given) != 1:
        raise InvalidInputError("give exactly one of --manifest, --frame-aligned, --pittsburgh")
    validation = None
    if args.manifest:
        train_set = read_manifest(args.manifest)
    elif args.frame_aligned:
        train_set = frame_aligned_dataset(*args.frame_aligned, span=tuple(args.span))
        if args.val_span:
            validation = frame_aligned_dataset(*args.frame_aligned, span=tuple(args.val_span))
    else:
        if args.image_root is None:
            raise InvalidInputError("--pittsburgh needs --image-root")
        train_set = read_pittsburgh(args.pittsburgh, args.image_root)
    if args.val_manifest:
        validation = read_manifest(args.val_manifest)
    if args.pos_radius is not None or args.neg_radius is not None:
        radii = replace(train_set.radii,
                        **({"pos_radius": args.pos_radius} if args.pos_radius is not None else {}),
                        **({"neg_radius": args.neg_radius} if args.neg_radius is not None else {}))
        train_set = replace(train_set, radii=radii)
    return train_set, validation


def run_fit(args: argparse.Namespace) -> dict[str, Any] | None:

    from .backbones import build_backbone
    from .cli_train import _print_table
    from .config import preset
    from .init_model import init_model

    if args.threads:
        torch.set_num_threads(args.threads)
    train_set, validation = _datasets(args)
    resume_state = None
    if args.resume is not None:
        ckpt = load_checkpoint(args.resume)
        if ckpt.training_state is None:
            raise InvalidInputError(
                f"{args.resume}: no training state to resume from (an init or finished "
                f"checkpoint): start a new run from it with --init {args.resume}")
        stages = ckpt.config.backbone.trainable_stages
        if args.trainable_stages is not None and args.trainable_stages != stages:
            raise InvalidInputError(
                f"--resume continues {args.resume} as it was trained, with "
                f"--trainable-stages {stages}; drop --trainable-stages {args.trainable_stages}, "
                f"or start a new run from it with --init {args.resume}")
        model, resume_state = ckpt.build(), ckpt.training_state
    elif args.init is not None:
        model = load_checkpoint(args.init).build()
    else:
        model, _ = init_model(preset(), train_set.database.paths, progress=not args.no_progress)
    if args.trainable_stages is not None:
        backbone_config = replace(model.config.backbone, trainable_stages=args.trainable_stages)
        fresh = build_backbone(replace(backbone_config, pretrained=False))
        fresh.load_state_dict(model.backbone.state_dict())
        model.backbone = fresh
        model.config = model.config.replace(backbone=backbone_config)
    config = TrainConfig(
        epochs=TrainConfig.epochs if args.epochs is None else args.epochs,
        queries_per_step=args.queries_per_step, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, lr_step_epochs=args.lr_step,
        lr_gamma=args.lr_gamma, margin=args.margin, refresh_every=args.refresh_every,
        mining=MiningConfig(num_negatives=args.negatives, negative_pool=args.negative_pool,
                            seed=args.seed),
        augment=AugmentConfig(enabled=not args.no_augment),
        train_height=args.train_size[0] if args.train_size else None,
        train_width=args.train_size[1] if args.train_size else None, seed=args.seed,
    )
    if args.resume is not None:
        from .resume import resumed_config

        config = resumed_config(args.resume, ckpt, config, train_set,
                                epochs_given=args.epochs is not None)
    result = train(model, train_set, config, output=args.output, validation=validation,
                   resume=resume_state, progress=not args.no_progress,
                   provenance={"dataset": train_set.describe(),
                               "dataset_files": dataset_files_digest(train_set),
                               "seed": config.seed,
                               "train_config": _jsonable(asdict(config))})
    if not result.main_process:
        return None  # rank 0 reports for everyone
    rows = {f"epoch {h.epoch}": f"loss {h.loss:.4f}, {h.images_per_second:.1f} img/s"
            + (f", R@1 {h.recall['R@1']:.3f}" if h.recall else "") for h in result.history}
    _print_table("vpr-train fit", {**rows, "skipped queries": result.skipped_queries,
                                   "peak memory (MB)": result.peak_memory_mb,
                                   "checkpoint": str(result.checkpoint)})
    return result.to_dict()
