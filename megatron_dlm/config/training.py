"""Training loop, optimizer and LR schedule, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_dlm.config.base import require


@dataclass
class TrainingConfig:
    """Batch sizes, compute budget, evaluation and robustness."""

    micro_batch_size: int = 4
    """Sequences per micro-batch on each data-parallel rank."""
    global_batch_size: int | None = None
    """Sequences per optimizer step across all data-parallel ranks (gradient accumulation makes
    up the difference). Default: micro batch size x data-parallel size."""
    train_iters: int | None = None
    """Optimizer steps to train for (the compute budget); or give --train-tokens."""
    train_tokens: int | None = None
    """Compute budget in tokens (global batch x seq length x steps); sets --train-iters."""
    seed: int = 1234
    """Seed for initialisation, data order and diffusion noise."""
    eval_interval: int | None = 1000
    """Evaluate on the validation set every N steps (and at the end); unset: only at the end."""
    eval_iters: int = 10
    """Global batches per evaluation."""
    max_skipped_iters: int = 10
    """Stop when this many consecutive steps were skipped for NaN/Inf loss or gradients."""
    check_for_nan_in_loss_and_grad: bool = True
    """Skip (and count) a step whose loss or gradient norm is NaN/Inf."""
    exit_interval: int | None = None
    """Stop (after saving a checkpoint) once the iteration is a multiple of this."""
    dry_run: bool = False
    """Validate the configuration and print the layout, parameter counts, memory and FLOPs per
    step and the projected time for the budget, without building the model or data."""
    dry_run_world_size: int | None = None
    """World size that --dry-run simulates (default: the current one)."""
    dry_run_vocab_size: int = 32000
    """Vocabulary size --dry-run assumes when no --tokenizer-model is given."""
    dry_run_mfu: float = 0.4
    """Model FLOPs utilisation --dry-run assumes for the projected time."""

    def __post_init__(self):
        require(self.micro_batch_size >= 1, "--micro-batch-size must be >= 1")
        require(
            self.global_batch_size is None or self.global_batch_size >= 1,
            "--global-batch-size must be >= 1",
        )
        require(
            not (self.train_iters is not None and self.train_tokens is not None),
            "give either --train-iters or --train-tokens, not both",
        )
        require(self.train_iters is None or self.train_iters >= 0, "--train-iters must be >= 0")
        require(self.train_tokens is None or self.train_tokens > 0, "--train-tokens must be > 0")
        require(self.eval_iters >= 0, "--eval-iters must be >= 0")
        require(
            self.eval_interval is None or self.eval_interval >= 1, "--eval-interval must be >= 1"
        )
        require(self.max_skipped_iters >= 1, "--max-skipped-iters must be >= 1")


@dataclass
class OptimizerConfig:
    """Optimizer (megatron-core's, optionally distributed) and learning-rate schedule."""

    optimizer: Literal["adam", "sgd"] = "adam"
    """'adam' is AdamW (decoupled weight decay), as in Megatron-LM."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    lr_decay_style: Literal["constant", "linear", "cosine", "inverse-square-root", "WSD"] = "cosine"
    """Decay after warmup. WSD: warmup-stable-decay (see --lr-wsd-decay-*)."""
    lr_warmup_iters: int = 0
    """Linear warmup steps."""
    lr_warmup_fraction: float | None = None
    """Warmup as a fraction of --lr-decay-iters (overrides --lr-warmup-iters)."""
    lr_warmup_init: float = 0.0
    """Learning rate at the start of warmup."""
    lr_decay_iters: int | None = None
    """Steps over which the learning rate decays. Default: the training steps."""
    lr_wsd_decay_style: Literal["exponential", "linear", "cosine", "minus_sqrt"] = "exponential"
    """Shape of the WSD decay phase."""
    lr_wsd_decay_iters: int | None = None
    """Length of the WSD decay phase in steps."""
    lr_wsd_decay_fraction: float | None = None
    """Length of the WSD decay phase as a fraction of the decay steps (default 0.1 if neither
    this nor --lr-wsd-decay-iters is given)."""
    weight_decay: float = 0.01
    """Decoupled weight decay (not applied to biases and norms)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2 (Megatron-LM's default is 0.999; 0.95 is common for LLM pretraining)."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    sgd_momentum: float = 0.9
    """SGD momentum."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""
    use_distributed_optimizer: bool = False
    """Shard optimizer state (and fp32 main weights) across data-parallel ranks (ZeRO-1)."""
    overlap_grad_reduce: bool = False
    """Overlap the data-parallel gradient reduction with the backward pass."""
    overlap_param_gather: bool = False
    """Overlap the distributed optimizer's parameter all-gather with the forward pass."""
    loss_scale: float | None = None
    """Static fp16 loss scale; unset uses dynamic loss scaling."""
    initial_loss_scale: float = 2.0**32
    """Initial dynamic fp16 loss scale."""
    min_loss_scale: float = 1.0
    """Minimum dynamic fp16 loss scale."""
    loss_scale_window: int = 1000
    """Steps without overflow before the dynamic loss scale grows."""
    hysteresis: int = 2
    """Overflows tolerated before the dynamic loss scale shrinks."""

    def __post_init__(self):
        require(self.lr >= 0, "--lr must be >= 0")
        require(0 <= self.min_lr <= self.lr, "--min-lr must be in [0, --lr]")
        require(self.lr_warmup_init <= self.lr, "--lr-warmup-init must be <= --lr")
        require(self.clip_grad >= 0, "--clip-grad must be >= 0")
        require(self.lr_warmup_iters >= 0, "--lr-warmup-iters must be >= 0")
        if self.lr_warmup_fraction is not None:
            require(0 <= self.lr_warmup_fraction < 1, "--lr-warmup-fraction must be in [0, 1)")
        if self.lr_wsd_decay_fraction is not None:
            require(
                0 < self.lr_wsd_decay_fraction <= 1, "--lr-wsd-decay-fraction must be in (0, 1]"
            )
        require(
            self.optimizer == "adam" or not self.use_distributed_optimizer,
            "--use-distributed-optimizer needs --optimizer adam",
        )
        require(
            not self.overlap_param_gather or self.use_distributed_optimizer,
            "--overlap-param-gather needs --use-distributed-optimizer",
        )


@dataclass
class CheckpointConfig:
    """dist_checkpointing (torch_dist) checkpoints in Megatron's directory layout."""

    save: str | None = None
    """Directory for checkpoints (``iter_0000500/`` + ``latest_checkpointed_iteration.txt``)."""
    load: str | None = None
    """Directory to resume from (any TP/PP/EP layout). Default: --save, if it has one."""
    save_interval: int | None = None
    """Save every N steps (and at the end, and on SIGTERM/SIGUSR1)."""
    keep_last_k: int | None = None
    """Keep only the newest K checkpoints in --save."""
    no_load_optim: bool = False
    """Do not load optimizer state (and scheduler) from the checkpoint."""
    no_load_rng: bool = False
    """Do not load RNG states from the checkpoint."""
    finetune: bool = False
    """Load only the weights: start at iteration 0 with fresh optimizer, scheduler and data."""
    async_save: bool = False
    """Write checkpoint shards in a background process while training continues (megatron-core's
    asynchronous torch_dist save); the next save, or the end of the run, waits for it, and the
    tracker names a checkpoint only once its files are complete and verified."""
    exit_signal_handler: bool = True
    """On SIGTERM or SIGUSR1 (e.g. SLURM preemption), save a checkpoint and exit cleanly."""

    def __post_init__(self):
        require(self.save_interval is None or self.save_interval >= 1, "--save-interval >= 1")
        require(self.keep_last_k is None or self.keep_last_k >= 1, "--keep-last-k must be >= 1")
        if self.load is None and self.save is not None:
            self.load = self.save


@dataclass
class LoggingConfig:
    """Console, JSONL metrics file and Weights & Biases."""

    log_interval: int = 10
    """Print (and record) metrics every N steps."""
    log_dir: str | None = None
    """Run directory for metrics.jsonl and the resolved config. Default: --save, else
    runs/<--wandb-exp-name or 'run'>."""
    wandb_project: str | None = None
    """Log to Weights & Biases under this project (WANDB_MODE=offline works without network)."""
    wandb_exp_name: str | None = None
    """Run name for Weights & Biases (and the default run directory)."""
    wandb_save_dir: str | None = None
    """Directory for local Weights & Biases files. Default: the run directory."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one device for MFU; default: looked up for known GPUs."""

    def __post_init__(self):
        require(self.log_interval >= 1, "--log-interval must be >= 1")
