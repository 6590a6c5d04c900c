"""Train a feature-level drafter (EAGLE-2 or HASS) on feature caches, resumably, with Hugging Face Accelerate.

Drafter position p reads (f_p, x_{p+1}) and predicts the next feature f_{p+1} and the target's distribution over
x_{p+2} (positions whose x_{p+2} is a response token count). Losses:

- eagle2: smooth-L1 feature regression + token_weight · cross-entropy against the target's top-1 token; one pass.
- hass:   the same regression + token_weight · top-K distillation (the target's K best logits, softmax over the
          ones in the draft vocabulary) and harmonized context alignment: pass j feeds the drafter its own
          predicted features, and each query sees, for the j-1 positions before it, the keys computed from
          predicted features in earlier passes (as at draft depth j), and target-feature keys before those.

Validation reports top-1 draft accuracy per depth (pass j ≈ depth j) on held-out sequences for both kinds.
The checkpoint folder is written atomically every `save_every` steps together with the optimizer state; a killed
run restarted with the same command resumes and continues the same loss curve. train_state.pt is read with
weights_only=True (tensors and plain data only), so a file planted in an output folder cannot run code.

With lora_rank > 0 the same loop trains peft LoRA layers on the frozen init_from drafter instead of all weights, and
the folder holds only the adapter (drafters/lora.py): a task specialist costs a few hundred KB, not a head.
`example_ids` restricts training to some examples of the feature folders (e.g. one task's), without new caches.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..drafters.checkpoint import LORA_FORMAT, read_config, recover_folder, save_drafter
from ..drafters.eagle import KINDS, EagleDrafter, EagleModel, body_config
from ..drafters.loading import load_model
from ..drafters.lora import DEFAULT_TARGETS, base_sha256, inject_lora, resolve_targets, save_adapter
from ..drafters.vocab import DraftVocab
from ..errors import TaskspecError
from ..models.cache import new_cache
from ..models.causal_lm import CausalLM
from .data import Sequence, load_feature_dirs, mixed_order, select_examples, selection_digest, split_validation

STATE_FILE = "train_state.pt"
LOG_FILE = "train_log.jsonl"
STATE_KEYS = ("config", "feature_dirs", "step", "log", "model", "optimizer", "schedule", "python_rng", "torch_rng")


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "eagle2"
    steps: int = 1000
    seqs_per_step: int = 4
    lr: float = 5e-4
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    draft_vocab_size: int = 32768
    feature_weight: float = 1.0
    token_weight: float = 0.1
    hca_passes: int = 3  # hass only; eagle2 trains one pass
    eval_depths: int = 3
    eval_sequences: int = 32
    val_fraction: float = 0.02
    save_every: int = 100
    eval_every: int = 100
    seed: int = 0
    init_from: str = ""  # a drafter checkpoint to start from (fine-tuning); "" = random initialisation
    lora_rank: int = 0  # > 0: train a LoRA adapter of this rank on the frozen init_from drafter; 0: all weights
    lora_alpha: float = 16.0  # the LoRA deltas are scaled by lora_alpha / lora_rank
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS  # linear layers to adapt (names or name suffixes)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TaskspecError(f"--kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        for name in ("steps", "seqs_per_step", "draft_vocab_size", "hca_passes", "eval_depths", "save_every",
                     "eval_every"):
            if getattr(self, name) < 1:
                raise TaskspecError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # a list would not compare on resume
        if self.lora_rank < 0:
            raise TaskspecError(f"--lora-rank must be >= 0 (0: train all weights), got {self.lora_rank}")
        if self.lora_rank:
            if not self.init_from:
                raise TaskspecError(f"--lora-rank {self.lora_rank}: a LoRA adapter is trained on a base drafter; "
                                    "pass --init (a drafter checkpoint folder, or eagle2 / hass for a shipped one)")
            if not self.lora_alpha > 0 or not self.lora_targets:
                raise TaskspecError(f"--lora-alpha must be > 0 and --lora-targets not empty, got {self.lora_alpha} "
                                    f"and {self.lora_targets}")

    @property
    def passes(self) -> int:
        return self.hca_passes if self.kind == "hass" else 1


class DraftLoss:
    """Forward passes and losses of one sequence; shared by training and validation."""

    def __init__(self, model: EagleModel, target: CausalLM, vocab: DraftVocab, config: TrainConfig):
        self.model, self.config, self.vocab = model, config, vocab
        self.lm = CausalLM(model.body, name="drafter-body")
        self.embed = target.model.get_input_embeddings()
        self.head_weight = target.lm_head.weight.detach()[vocab.d2t].float()  # [draft_vocab, hidden], frozen

    def __call__(self, seq: Sequence, passes: int) -> tuple[torch.Tensor, list[float], int]:
        """Returns (mean loss over passes, top-1 accuracy per pass, number of counted positions)."""
        T = seq.input_ids.shape[0]
        n = T - 2  # positions p = 0 .. T-3
        if n < 1:
            return torch.zeros(()), [], 0
        with torch.no_grad():
            embeds = self.embed(seq.input_ids[1 : T - 1]).float()  # [n, H]: x_{p+1}
        target_feats = seq.hidden[1 : T - 1].float()  # [n, H]: f_{p+1}
        counted = seq.loss_mask[2:T]  # [n]: x_{p+2} is a response token
        top_draft = self.vocab.to_draft(seq.topk_ids[1 : T - 1])  # [n, K]; -1 = not draftable
        label = top_draft[:, 0]  # the target's greedy token, in draft ids
        soft = torch.where(top_draft >= 0, seq.topk_logits[1 : T - 1].float(), -torch.inf).softmax(-1)
        soft = torch.nan_to_num(soft)  # rows with nothing draftable
        feats = seq.hidden[: n].float()  # [n, H]: f_p, pass 1
        cache = new_cache()
        position = torch.arange(n)
        total, accuracy = torch.zeros(()), []
        for j in range(1, passes + 1):
            inputs = self.model.fuse(embeds, feats)
            if j == 1:
                out = self.lm.forward_with_grad(seq.input_ids[:n], cache, logit_rows=None, want_hidden=True,
                                                inputs_embeds=inputs)
            else:  # query p sees key (p', pass m) with m = max(1, j - (p - p')), p' <= p
                distance = position[:, None] - position[None, :]  # [n, n]
                past_mask = torch.cat([(distance >= 0) & (torch.clamp(j - distance, min=1) == m)
                                       for m in range(1, j)], dim=1)  # [n, (j-1)·n]
                out = self.lm.forward_with_grad(seq.input_ids[:n], cache, tree_mask=torch.eye(n, dtype=torch.bool),
                                                position_offsets=position - (j - 1) * n, logit_rows=None,
                                                want_hidden=True, past_mask=past_mask, inputs_embeds=inputs)
            predicted = out.hidden  # [n, H]: f̂_{p+1}
            rows = (counted & (position >= j - 1)).nonzero().squeeze(1)  # [v]: positions whose loss counts
            if rows.numel() == 0:
                break
            # the 32k-row head is most of the cost: apply it to the counted rows only
            logits = predicted[rows] @ self.head_weight.T  # [v, draft_vocab]
            reg = F.smooth_l1_loss(predicted[rows], target_feats[rows], reduction="none").mean(-1)  # [v]
            wanted = label[rows]  # [v]
            if self.config.kind == "hass":
                logp = torch.log_softmax(logits, -1).gather(1, top_draft[rows].clamp_min(0))  # [v, K]
                token = -(soft[rows] * logp).sum(-1)
            else:
                token = F.cross_entropy(logits, wanted.clamp_min(0), reduction="none") * (wanted >= 0)
            total = total + (self.config.feature_weight * reg + self.config.token_weight * token).mean()
            accuracy.append(float((logits.argmax(-1) == wanted)[wanted >= 0].float().mean()))
            feats = torch.cat([seq.hidden[:1].float(), predicted[:-1]])  # pass j+1 reads its own predictions
        return total / max(len(accuracy), 1), accuracy, int(counted.sum())


def vocab_from_features(groups: list[list[Sequence]], target: CausalLM, size: int) -> DraftVocab:
    """The most frequent tokens of the training data (response and prompt), plus EOS."""
    counts = torch.zeros(target.vocab_size, dtype=torch.long)
    for group in groups:
        for seq in group:
            counts += torch.bincount(seq.input_ids, minlength=target.vocab_size)
    return DraftVocab.from_counts(counts, size, always=target.eos_token_ids)


def train(target: CausalLM, feature_dirs: list[str], out: str | Path, config: TrainConfig,
          mix: list[float] | None = None, progress: bool = True, example_ids: set[str] | None = None) -> dict:
    """Train (or resume) a drafter, or a LoRA adapter when config.lora_rank > 0, into `out`; returns the last log
    entry. example_ids: train only on these examples (ids of the feature manifests, e.g. "mathinstruct/464")."""
    from accelerate import Accelerator

    out = Path(out)
    groups = load_feature_dirs(feature_dirs, target.fingerprint)
    weights = mix
    if example_ids is not None:
        example_ids = set(example_ids)
        groups, weights = select_examples(groups, example_ids, mix, feature_dirs)
    selection = selection_digest(example_ids)
    train_groups, held_out = split_validation(groups, config.val_fraction, config.seed)
    held_out = held_out[: config.eval_sequences]
    recover_folder(out)  # a kill between the two renames of a checkpoint save left its previous version aside
    state = _load_state(out / STATE_FILE)
    if state is not None and (state["config"] != asdict(config) or state.get("examples") != selection
                              or state["feature_dirs"] != [str(d) for d in feature_dirs]
                              or state.get("mix", mix) != mix):  # runs saved before "mix" was recorded: unchecked
        raise TaskspecError(f"{out}: a training run with other settings is checkpointed here; use another --out "
                            "or the same options to resume it")
    torch.manual_seed(config.seed)
    model, vocab, base_sha = _initial_model(target, config, train_groups, out, state)
    model.train()
    loss_fn = DraftLoss(model, target, vocab, config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    step, log = 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, log = state["step"], state["log"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
    order = mixed_order(train_groups, weights, config.steps * config.seqs_per_step, config.seed)
    bar = tqdm(total=config.steps, initial=step, desc=f"train {config.kind}", unit="step", disable=not progress)
    while step < config.steps:
        batch = order[step * config.seqs_per_step : (step + 1) * config.seqs_per_step]
        mine = batch[accelerator.process_index :: accelerator.num_processes]
        optimizer.zero_grad()
        losses, accs = [], []
        for seq in mine:
            loss, acc, _ = loss_fn(seq, config.passes)
            accelerator.backward(loss / len(mine))
            losses.append(float(loss.detach()))
            accs.append(acc[0] if acc else 0.0)
        accelerator.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        step += 1
        entry = {"step": step, "loss": round(sum(losses) / max(len(losses), 1), 5),
                 "train_acc_depth1": round(sum(accs) / max(len(accs), 1), 4), "lr": schedule.get_last_lr()[0]}
        if step % config.eval_every == 0 or step == config.steps:
            entry["val_acc_per_depth"] = evaluate(loss_fn, held_out, config.eval_depths)
        log.append(entry)
        bar.update()
        bar.set_postfix(loss=entry["loss"], acc=entry["train_acc_depth1"])
        if accelerator.is_main_process and (step % config.save_every == 0 or step == config.steps):
            _save(accelerator.unwrap_model(model), vocab, target, out, config, feature_dirs, optimizer, schedule,
                  step, log, mix, example_ids, base_sha)
    bar.close()
    return log[-1] if log else {}


@torch.no_grad()
def evaluate(loss_fn: DraftLoss, sequences: list[Sequence], depths: int) -> list[float]:
    """Top-1 draft accuracy per depth on held-out sequences, weighted by counted positions."""
    was_training = loss_fn.model.training
    loss_fn.model.eval()
    totals, weights = [0.0] * depths, [0] * depths
    for seq in sequences:
        _, acc, count = loss_fn(seq, depths)
        for d, a in enumerate(acc):
            if not math.isnan(a):
                totals[d] += a * count
                weights[d] += count
    loss_fn.model.train(was_training)
    return [round(t / w, 4) if w else 0.0 for t, w in zip(totals, weights)]


def _load_state(path: Path) -> dict | None:
    """train_state.pt of the run to resume (None: nothing to resume). Read with weights_only=True, which unpickles
    tensors and plain data only: a file planted in an output folder cannot run code. A file that is damaged, or holds
    anything else, raises a TaskspecError naming it instead of a traceback."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds for a bad file: UnpicklingError, EOFError, RuntimeError
        problem = _load_problem(exc)
    else:
        missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else ["not a dict"]
        if not missing:
            return state
        problem = f"missing {', '.join(missing)}"
    raise TaskspecError(f"{path}: cannot resume from it ({problem}); expected a training state written by "
                        "`taskspec train`, which holds tensors and plain data only (anything else is refused: "
                        "loading it could run code). Delete it, or use another --out, to start over")


def _load_problem(exc: Exception) -> str:
    """The telling line of a torch.load error (its weights-only errors are a paragraph of advice around it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return f"{type(exc).__name__}: {(telling or lines or [''])[0].split('. ')[0][:200]}"


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _initial_model(target: CausalLM, config: TrainConfig, train_groups: list[list[Sequence]], out: Path,
                   state: dict | None) -> tuple[EagleModel, DraftVocab, str | None]:
    """(fp32 model to train, draft vocabulary, sha256 of the LoRA base or None).

    Random weights; init_from's weights (fine-tuning); or init_from frozen under fresh LoRA layers. Resuming, the
    fp32 master weights of train_state.pt replace the trainable ones (the saved checkpoint itself is bf16)."""
    base_sha = None
    if config.lora_rank:
        if read_config(config.init_from).get("format") == LORA_FORMAT:
            raise TaskspecError(f"--init {config.init_from}: a LoRA adapter; --lora-rank needs a full drafter "
                                "checkpoint as its base")
        base_sha = base_sha256(config.init_from)
        if state is not None and state.get("base_sha256") != base_sha:
            raise TaskspecError(f"{out}: the base drafter {config.init_from} has other weights than when this LoRA "
                                "run started; use another --out, or restore the base to resume")
    if state is not None and not config.lora_rank:
        model, vocab, _ = load_model(out, target)
    elif config.init_from:
        model, vocab, _ = load_model(config.init_from, target)
        if len(vocab) != config.draft_vocab_size:
            raise TaskspecError(f"--init {config.init_from}: its draft vocabulary has {len(vocab)} tokens but "
                                f"--draft-vocab-size is {config.draft_vocab_size}; pass --draft-vocab-size "
                                f"{len(vocab)}")
    else:
        model = EagleModel(body_config(target))
        vocab = vocab_from_features(train_groups, target, config.draft_vocab_size)
    model = model.float()
    if config.lora_rank:
        model = inject_lora(model, config.lora_rank, config.lora_alpha, resolve_targets(model, config.lora_targets))
    if state is not None:
        wanted = _master_weights(model, config).keys()
        if set(state["model"]) != set(wanted):
            raise TaskspecError(f"{out / STATE_FILE}: its weights do not match the model being resumed; use another "
                                "--out")
        model.load_state_dict(state["model"], strict=not config.lora_rank)
    return model, vocab, base_sha


def _master_weights(model: EagleModel, config: TrainConfig) -> dict[str, torch.Tensor]:
    """What train_state.pt keeps to resume: every weight, or (LoRA) only the LoRA ones; the base stays where it is."""
    weights = model.state_dict()
    return {k: v for k, v in weights.items() if ".lora_" in k} if config.lora_rank else weights


def _save(model, vocab, target, out, config, feature_dirs, optimizer, schedule, step, log, mix, example_ids,
          base_sha) -> None:
    selection = selection_digest(example_ids)
    state = {"config": asdict(config), "feature_dirs": [str(d) for d in feature_dirs], "step": step, "log": log,
             "model": _master_weights(model, config), "examples": selection, "mix": mix, "base_sha256": base_sha,
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "python_rng": random.getstate(), "torch_rng": torch.get_rng_state()}

    def write_state(folder: Path) -> None:
        torch.save(state, folder / STATE_FILE)
        (folder / LOG_FILE).write_text("".join(json.dumps(e) + "\n" for e in log))

    extra = {"train_step": step, "train_config": asdict(config), "mix": mix,
             "features": [str(d) for d in feature_dirs],
             "examples": None if example_ids is None else {"count": len(example_ids), "sha256": selection},
             "last": log[-1] if log else None}
    if config.lora_rank:
        save_adapter(model, out, target, base=config.init_from, base_sha=base_sha, kind=config.kind,
                     rank=config.lora_rank, alpha=config.lora_alpha, targets=config.lora_targets,
                     draft_vocab_size=len(vocab), extra=extra, extra_files=write_state)
    else:
        save_drafter(EagleDrafter(_bf16_copy(model), vocab, target, config.kind), out, extra=extra,
                     extra_files=write_state)


def _bf16_copy(model: EagleModel) -> EagleModel:
    """Checkpoints are stored in bf16 for inference; train_state.pt keeps the fp32 master weights for resuming."""
    import copy

    return copy.deepcopy(model).to(torch.bfloat16).eval()
