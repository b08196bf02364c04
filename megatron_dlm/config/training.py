"""Training loop, optimizer and LR schedule, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_dlm.config.base import require, require_finite


@dataclass
class TrainingConfig:
    """Batch sizes, compute budget, evaluation and robustness."""

    micro_batch_size: int = 4
    """Sequences per micro-batch on each data-parallel rank."""
    global_batch_size: int | None = None
    """Sequences per optimizer step across all data-parallel ranks (gradient accumulation makes
    up the difference). Default: micro batch size x data-parallel size."""
    rampup_batch_size: list[int] | None = None
    """Megatron-LM's batch-size ramp-up (START INCREMENT SAMPLES). Not implemented: accepted so
    that --dry-run sizes a Megatron-LM script (at the full --global-batch-size); training
    refuses it."""
    train_iters: int | None = None
    """Optimizer steps to train for (the compute budget); or give --train-samples or
    --train-tokens."""
    train_samples: int | None = None
    """Compute budget in sequences (Megatron-LM's flag); sets --train-iters to
    ceil(samples / global batch size)."""
    train_tokens: int | None = None
    """Compute budget in tokens (global batch x seq length x steps); sets --train-iters."""
    seed: int = 1234
    """Seed for initialisation, data order and diffusion noise."""
    eval_interval: int | None = None
    """Evaluate on the validation set every N steps (and at the end); unset: only at the end."""
    eval_iters: int = 100
    """Global batches per evaluation."""
    eval_tasks: str | None = None
    """Comma-separated lm-eval tasks (``python_nextline_mc``, ``humaneval_offline``, or any task
    lm-eval knows) to run on the live model every --eval-tasks-interval steps and at the end of
    the budget; the data-parallel replicas share the requests (docs/inference.md)."""
    eval_tasks_interval: int | None = None
    """Run --eval-tasks every N steps (and at the end); unset: only at the end."""
    eval_tasks_limit: int | None = None
    """Documents per task for --eval-tasks (lm-eval's --limit); unset: every document."""
    eval_tasks_model_args: str | None = None
    """Options of the ``megatron_dlm`` lm-eval model for --eval-tasks, as ``key=value,...``
    (tools/evaluate.py's --model_args: mc_num, mc_batch_size, batch_size, gen_length, steps,
    block_length, remasking, threshold, cache, seed, ...)."""
    check_for_nan_in_loss_and_grad: bool = True
    """Stop the run with an error at the first step whose loss or gradient norm is NaN/Inf
    (Megatron-LM's meaning; the weights are not updated and the last checkpoint stays the
    newest). See --skip-nan-steps for skipping such steps instead."""
    skip_nan_steps: bool = False
    """Skip (and count) a step whose loss or gradient norm is NaN/Inf instead of stopping; the
    run stops after --max-skipped-iters such steps in a row."""
    max_skipped_iters: int = 10
    """With --skip-nan-steps: stop when this many consecutive steps were skipped."""
    exit_interval: int | None = None
    """Stop (after saving a checkpoint) once the iteration is a multiple of this."""
    exit_duration_in_mins: float | None = None
    """Save a checkpoint and exit once the run has taken this many minutes of wall time since
    it started (setup included; checked after every step, agreed across ranks): stop cleanly
    before a job's time limit and resume in the next job."""
    dry_run: bool = False
    """Validate the configuration and print the layout, parameter counts, memory and FLOPs per
    step and the projected time for the budget, without building the model or data."""
    dry_run_world_size: int | None = None
    """World size that --dry-run simulates (default: the current one)."""
    dry_run_vocab_size: int = 32000
    """Vocabulary size --dry-run assumes when the tokenizer's files (--tokenizer-model, or GPT-2's
    --vocab-file/--merge-file) are not given or not (yet) on this machine and no --vocab-size
    bounds it."""
    dry_run_mfu: float = 0.4
    """Model FLOPs utilisation --dry-run assumes for the projected time."""

    def __post_init__(self):
        require_finite(self)
        require(self.micro_batch_size >= 1, "--micro-batch-size must be >= 1")
        require(
            self.global_batch_size is None or self.global_batch_size >= 1,
            "--global-batch-size must be >= 1",
        )
        budgets = [
            name
            for name in ("train_iters", "train_samples", "train_tokens")
            if getattr(self, name) is not None
        ]
        given = " and ".join("--" + b.replace("_", "-") for b in budgets)
        require(len(budgets) <= 1, f"give one compute budget, not {given}")
        require(
            self.train_samples is None or self.train_samples >= 1,
            f"--train-samples must be >= 1, got {self.train_samples}",
        )
        require(
            self.rampup_batch_size is None or len(self.rampup_batch_size) == 3,
            "--rampup-batch-size takes three numbers: START INCREMENT SAMPLES",
        )
        require(
            self.train_iters is None or self.train_iters >= 1,
            f"--train-iters must be >= 1 (the compute budget in steps), got {self.train_iters}",
        )
        require(self.train_tokens is None or self.train_tokens > 0, "--train-tokens must be > 0")
        require(self.eval_iters >= 0, "--eval-iters must be >= 0")
        require(
            self.eval_interval is None or self.eval_interval >= 1, "--eval-interval must be >= 1"
        )
        require(
            self.eval_tasks_interval is None or self.eval_tasks_interval >= 1,
            f"--eval-tasks-interval must be >= 1, got {self.eval_tasks_interval}",
        )
        require(
            self.eval_tasks_limit is None or self.eval_tasks_limit >= 1,
            f"--eval-tasks-limit must be >= 1, got {self.eval_tasks_limit}",
        )
        if self.eval_tasks is not None:
            names = self.eval_tasks.split(",")
            require(
                all(name.strip() for name in names),
                f"--eval-tasks {self.eval_tasks!r}: expected comma-separated lm-eval task names",
            )
            self.eval_tasks = ",".join(name.strip() for name in names)
        if self.eval_tasks_model_args is not None:
            items = [item for item in self.eval_tasks_model_args.split(",") if item.strip()]
            require(
                bool(items) and all("=" in item for item in items),
                f"--eval-tasks-model-args {self.eval_tasks_model_args!r}: expected "
                "key=value,key=value (e.g. mc_num=32,gen_length=128)",
            )
        require(self.max_skipped_iters >= 1, "--max-skipped-iters must be >= 1")
        require(
            self.exit_duration_in_mins is None or self.exit_duration_in_mins > 0,
            "--exit-duration-in-mins must be > 0",
        )
        require(
            self.exit_interval is None or self.exit_interval >= 1, "--exit-interval must be >= 1"
        )
        require(
            self.dry_run_world_size is None or self.dry_run_world_size >= 1,
            f"--dry-run-world-size must be >= 1, got {self.dry_run_world_size}",
        )
        require(
            self.dry_run_vocab_size >= 1,
            f"--dry-run-vocab-size must be >= 1, got {self.dry_run_vocab_size}",
        )
        require(
            0.0 < self.dry_run_mfu <= 1.0,
            f"--dry-run-mfu must be in (0, 1] (a fraction of the peak), got {self.dry_run_mfu}",
        )


@dataclass
class OptimizerConfig:
    """Optimizer (megatron-core's, optionally distributed) and learning-rate schedule."""

    optimizer: Literal["adam", "sgd"] = "adam"
    """'adam' is AdamW (decoupled weight decay), as in Megatron-LM."""
    lr: float = 3e-4
    """Peak learning rate (Megatron-LM has no default)."""
    min_lr: float = 0.0
    """Learning rate at the end of the decay."""
    lr_decay_style: Literal["constant", "linear", "cosine", "inverse-square-root", "WSD"] = "linear"
    """Decay after warmup. WSD: warmup-stable-decay (see --lr-wsd-decay-*)."""
    lr_warmup_iters: int = 0
    """Linear warmup steps."""
    lr_warmup_samples: int = 0
    """Warmup in sequences (Megatron-LM's flag): divided by the global batch size into steps."""
    lr_warmup_fraction: float | None = None
    """Warmup as a fraction of --lr-decay-iters (overrides --lr-warmup-iters)."""
    lr_warmup_init: float = 0.0
    """Learning rate at the start of warmup."""
    lr_decay_iters: int | None = None
    """Steps over which the learning rate decays. Default: the training steps."""
    lr_decay_samples: int | None = None
    """Decay length in sequences (Megatron-LM's flag): divided by the global batch size into
    steps."""
    lr_wsd_decay_style: Literal["exponential", "linear", "cosine", "minus_sqrt"] = "exponential"
    """Shape of the WSD decay phase."""
    lr_wsd_decay_iters: int | None = None
    """Length of the WSD decay phase in steps."""
    lr_wsd_decay_samples: int | None = None
    """Length of the WSD decay phase in sequences (Megatron-LM's flag)."""
    lr_wsd_decay_fraction: float | None = None
    """Length of the WSD decay phase as a fraction of the decay steps (default 0.1 if neither
    this nor --lr-wsd-decay-iters is given)."""
    override_opt_param_scheduler: bool = field(
        default=False, metadata={"aliases": ("--override-opt_param-scheduler",)}
    )
    """On resume, follow this command line's LR schedule (--lr, --min-lr, warmup, decay steps
    and style, WSD decay) from the checkpoint's step, e.g. to train longer. Without this or
    --use-checkpoint-opt-param-scheduler a schedule that differs from the checkpoint's is an
    error."""
    use_checkpoint_opt_param_scheduler: bool = field(
        default=False, metadata={"aliases": ("--use-checkpoint-opt_param-scheduler",)}
    )
    """On resume, keep the checkpoint's LR schedule whatever this command line says."""
    decoupled_lr: float | None = None
    """Separate peak learning rate for the input embedding and output layer (megatron-core's
    decoupled_lr)."""
    decoupled_min_lr: float | None = None
    """Minimum learning rate of the --decoupled-lr parameters."""
    weight_decay: float = 0.01
    """Decoupled weight decay (not applied to biases and norms)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2 (the recipes use 0.95, common for LLM pretraining)."""
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
    grad_reduce_in_bf16: bool = False
    """Reduce gradients across data-parallel ranks in bf16 instead of fp32."""
    ddp_bucket_size: int | None = None
    """Gradient bucket size in elements with --overlap-grad-reduce. Default: megatron-core's,
    max(40M, 1M x DP size). Pin it to resume a distributed-optimizer checkpoint (default
    format) at a DP size that changes the default."""
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
        require_finite(self)
        require(self.lr >= 0, "--lr must be >= 0")
        require(0 <= self.min_lr <= self.lr, "--min-lr must be in [0, --lr]")
        require(self.lr_warmup_init <= self.lr, "--lr-warmup-init must be <= --lr")
        require(self.clip_grad >= 0, "--clip-grad must be >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            value = getattr(self, name)
            require(
                0.0 <= value < 1.0, f"--{name.replace('_', '-')} must be in [0, 1), got {value}"
            )
        require(self.adam_eps >= 0, f"--adam-eps must be >= 0, got {self.adam_eps}")
        require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        require(self.sgd_momentum >= 0, f"--sgd-momentum must be >= 0, got {self.sgd_momentum}")
        require(self.lr_warmup_iters >= 0, "--lr-warmup-iters must be >= 0")
        if self.lr_warmup_fraction is not None:
            require(0 <= self.lr_warmup_fraction < 1, "--lr-warmup-fraction must be in [0, 1)")
        if self.lr_wsd_decay_fraction is not None:
            require(
                0 < self.lr_wsd_decay_fraction <= 1, "--lr-wsd-decay-fraction must be in (0, 1]"
            )
        require(
            not (self.override_opt_param_scheduler and self.use_checkpoint_opt_param_scheduler),
            "give either --override-opt-param-scheduler or --use-checkpoint-opt-param-scheduler, "
            "not both",
        )
        require(
            self.optimizer == "adam" or not self.use_distributed_optimizer,
            "--use-distributed-optimizer needs --optimizer adam",
        )
        require(
            not self.overlap_param_gather or self.use_distributed_optimizer,
            "--overlap-param-gather needs --use-distributed-optimizer",
        )
        require(
            self.ddp_bucket_size is None or self.ddp_bucket_size >= 1,
            "--ddp-bucket-size must be >= 1",
        )
        require(self.lr_warmup_samples >= 0, "--lr-warmup-samples must be >= 0")
        require(
            not (self.lr_warmup_samples and self.lr_warmup_iters),
            "give either --lr-warmup-iters or --lr-warmup-samples, not both",
        )
        for iters, samples in (
            ("lr_decay_iters", "lr_decay_samples"),
            ("lr_wsd_decay_iters", "lr_wsd_decay_samples"),
        ):
            require(
                getattr(self, iters) is None or getattr(self, samples) is None,
                f"give either --{iters.replace('_', '-')} or --{samples.replace('_', '-')}, "
                "not both",
            )
            value = getattr(self, samples)
            require(value is None or value >= 1, f"--{samples.replace('_', '-')} must be >= 1")
        require(
            self.decoupled_min_lr is None or self.decoupled_lr is not None,
            "--decoupled-min-lr needs --decoupled-lr",
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
    ckpt_format: Literal["torch_dist"] = "torch_dist"
    """Checkpoint format: megatron-core's dist_checkpointing (torch_dist), the only one here;
    Megatron-LM's other formats are refused."""
    async_save: bool = False
    """Write checkpoint shards in a background process while training continues (megatron-core's
    asynchronous torch_dist save); the next save, or the end of the run, waits for it, and the
    tracker names a checkpoint only once its files are complete and verified."""
    exit_signal_handler: bool = field(default=False, metadata={"negatable": True})
    """On SIGTERM or SIGUSR1 (e.g. SLURM preemption), save a checkpoint and exit cleanly (the
    recipes and launch scripts turn it on)."""
    dist_ckpt_optim_fully_reshardable: bool = False
    """Save the distributed optimizer's state in megatron-core's fully_reshardable format
    (gathered per parameter; resumes at any TP/PP/EP) instead of the default dp_reshardable
    one (written in parallel by every rank; resumes only at the same TP/PP/EP, any DP size)."""

    def __post_init__(self):
        require(self.save_interval is None or self.save_interval >= 1, "--save-interval >= 1")
        require(self.keep_last_k is None or self.keep_last_k >= 1, "--keep-last-k must be >= 1")
        if self.load is None and self.save is not None:
            self.load = self.save


@dataclass
class LoggingConfig:
    """Console, JSONL metrics file and Weights & Biases."""

    log_interval: int = 100
    """Print (and record) metrics every N steps."""
    log_dir: str | None = None
    """Run directory for metrics.jsonl and the resolved config. Default: --save, else
    runs/<--wandb-exp-name or 'run'>."""
    wandb_project: str | None = None
    """Log to Weights & Biases under this project (WANDB_MODE=offline works without network)."""
    wandb_exp_name: str | None = None
    """Run name for Weights & Biases (and the default run directory)."""
    wandb_save_dir: str | None = None
    """Directory for local Weights & Biases files. Default: the run directory. A resumed run
    continues the Weights & Biases run of its checkpoint (the run id is saved in it)."""
    tensorboard_dir: str | None = None
    """Write Megatron-LM's TensorBoard scalars (``lm loss``, ``learning-rate``, ``grad-norm``,
    ``batch-size``, each also ``... vs samples``; ``lm loss validation``) here. Needs the
    tensorboard package (pip install tensorboard)."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one device for MFU; default: looked up for known GPUs."""

    def __post_init__(self):
        require(self.log_interval >= 1, "--log-interval must be >= 1")
