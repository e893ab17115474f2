"""`featcache finetune --generative`: LoRA on a generative BLIP-2's language model, from cached query states.

The ViT and Q-Former never run: the cache made with the generative checkpoint holds the Q-Former's
query states, and the language model learns to continue "[image tokens] prompt" with the answer (the
same tokens `rank` scores: " answer\\n" for OPT, "answer</s>" for T5). Adapters go on the language
model only: peft matches module names by suffix, so a plain list ["fc1", "fc2"] on the whole model
would also adapt the ViT's MLPs. Validation and test use `rank` over the training vocabulary.

Recipes (`--recipe`):
- paper-baseline: the BLIP-2 Classifier paper's baseline, LoRA rank 1 on OPT's attention and MLP,
  "Question: {} Answer:", L1 0.01, AdamW lr 1e-4 with its cosine schedule (alpha is not given: 1).
- lora-vqa-report: rank 16, alpha 32, dropout 0.05 on q/k/v/out and fc1/fc2, lr 1e-4 decaying linearly,
  3 epochs, batch 4, bf16 autocast on GPU, "Question: {} Answer in one word:", max_new_tokens 4.
Adapters stay fp32 (bf16 autocast on a GPU; fp16 with T5 is known to diverge).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..cache import open_cache
from ..cache.answers import read_references
from ..errors import FeatcacheError, ZeroShotError
from ..safe_folder import flatten, load_folder, save_folder, unflatten
from ..models.generative import GenerativeLM, load_generative, read_vision
from .rank import ONE_WORD_PROMPT, PAPER_PROMPT, answer_tokens, score_answers

OPT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
T5_TARGETS = ["q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"]
MODEL_FORMAT, STATE_FORMAT = "featcache-generative-finetune-1", "featcache-generative-finetune-state-1"


@dataclass
class GenerativeConfig:
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    prompt: str = ONE_WORD_PROMPT
    lr: float = 1e-4
    weight_decay: float = 0.0
    schedule: str = "linear"  # linear decay to 0 over the run, or cosine (t_max steps, eta_min)
    t_max: int = 500
    eta_min: float = 1e-6
    l1: float = 0.0
    epochs: int = 3
    batch_size: int = 4
    amp: str | None = "bfloat16"
    max_new_tokens: int = 4
    lora_qformer: bool = False  # adapters on the Q-Former too: it then reruns on cached ViT states (--store-vision)
    validation_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    eval_split: str = "test"
    """The split evaluated once with the best epoch's adapters (a benchmark's val or testdev)."""

    def identity(self) -> dict:
        """What a resume must match: everything but `epochs` (unless the linear decay spans the epochs) and the
        split evaluated at the end."""
        d = asdict(self)
        d.pop("eval_split")
        if self.schedule != "linear":
            d.pop("epochs")
        return d


RECIPES = {
    "paper-baseline": GenerativeConfig(lora_rank=1, lora_alpha=1, prompt=PAPER_PROMPT, weight_decay=1e-6,
                                       schedule="cosine", l1=0.01, epochs=10, batch_size=32),
    "lora-vqa-report": GenerativeConfig(),
}


def inject_lora(lm: GenerativeLM, config: GenerativeConfig) -> list[str]:
    """LoRA adapters on the language model's attention and MLP projections (and with `lora_qformer` on the
    Q-Former's, as the classifier fine-tune does); returns the names targeted."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise FeatcacheError("generative fine-tuning needs peft: pip install 'featcache[finetune]'") from None
    names = {n.rsplit(".", 1)[-1] for n, m in lm.lm.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in (OPT_TARGETS if lm.decoder_only else T5_TARGETS) if t in names]
    lm.model.requires_grad_(False)
    lora = dict(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
    inject_adapter_in_model(LoraConfig(target_modules=targets, **lora), lm.lm)
    if config.lora_qformer:
        from ..finetune.qformer import QFORMER_TARGETS

        inject_adapter_in_model(LoraConfig(target_modules=QFORMER_TARGETS, **lora), lm.model.qformer)
        targets = targets + [f"qformer.{t}" for t in QFORMER_TARGETS]
        lm.qformer_adapted = True
    lm.model.to(lm.device)
    return targets


def adapter_state(lm: GenerativeLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous() for k, v in lm.model.state_dict().items() if "lora_" in k}


def _batch_loss(lm: GenerativeLM, tokens: torch.Tensor, prompts: list[str], answers: list[list[int]]) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens after [image tokens] prompt (teacher forcing)."""
    tok = lm.tokenizer
    prompt_ids = [tok(p).input_ids for p in prompts]
    n_img = tokens.shape[1]
    if lm.decoder_only:
        seqs = [p + a for p, a in zip(prompt_ids, answers)]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(seqs), n_img + width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), n_img + width), dtype=torch.long)
        for i, (p, a) in enumerate(zip(prompt_ids, answers)):
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            labels[i, n_img + len(p):n_img + len(p) + len(a)] = torch.tensor(a)
            mask[i, :n_img + len(p) + len(a)] = 1
        embeds = torch.cat([tokens, lm.embed(ids)], 1)
        return lm.lm(inputs_embeds=embeds, attention_mask=mask.to(lm.device), labels=labels.to(lm.device)).loss
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n_img + width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, :len(p)] = torch.tensor(p)
        mask[i, :n_img + len(p)] = 1
    a_width = max(map(len, answers))
    labels = torch.full((len(answers), a_width), -100, dtype=torch.long)
    for i, a in enumerate(answers):
        labels[i, :len(a)] = torch.tensor(a)
    embeds = torch.cat([tokens, lm.embed(ids)], 1)
    return lm.lm(inputs_embeds=embeds, attention_mask=mask.to(lm.device), labels=labels.to(lm.device)).loss


@dataclass
class GenerativeReport:
    out: Path
    epochs_run: int
    best_validation_accuracy: float
    test_accuracy: float | None
    samples_per_second: float
    targets: list[str]
    resumed_from_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    test_benchmark: dict | None = None
    """On a benchmark cache: its own figures for the evaluated split's rank answers (VQA accuracy, ...)."""
    submission: list | dict | None = None


def _split(cache, config: GenerativeConfig):
    from ..finetune.data import Sample, split_validation

    splits, errors = cache.strings("questions", "split"), cache.strings("questions", "error")
    texts, answers = cache.strings("questions", "text"), cache.strings("questions", "answer")
    rows, keys = cache.array("questions", "image_row"), cache.strings("images", "key")
    ok = np.flatnonzero(errors == "")
    samples = [Sample(keys[rows[i]], texts[i], answers[i], splits[i]) for i in ok]
    train, val = split_validation(samples, config.validation_fraction, config.seed)  # image-disjoint
    test = np.array([j for j, s in enumerate(samples) if s.split == config.eval_split], dtype=np.int64)
    return ok, texts[ok], answers[ok], rows[ok], train, val, test


@torch.no_grad()
def evaluate_rank(lm: GenerativeLM, cache, idx, texts, answers, rows, vocab, prompt, answer_ids: dict | None = None,
                  batch: int = 64, predictions: list | None = None) -> tuple[float, float]:
    """(rank accuracy over `vocab`, teacher-forced answer loss) on questions `idx`, one pass over their image
    tokens. The loss (what breaks ties between epochs of equal accuracy) counts answers in `answer_ids` only.
    The ranked answers are appended to `predictions` where given."""
    hits, loss, counted = 0, 0.0, 0
    for s in range(0, len(idx), batch):
        part = idx[s:s + batch]
        used, inv = np.unique(rows[part], return_inverse=True)
        tokens = lm.image_tokens(cache, used)[inv]
        prompts = [prompt.format(t) for t in texts[part]]
        scores = score_answers(lm, tokens, prompts, vocab)
        ranked = np.asarray(vocab, dtype=object)[scores.argmax(1)]
        hits += int((ranked == answers[part]).sum())
        if predictions is not None:
            predictions.extend(ranked.tolist())
        known = [i for i, a in enumerate(answers[part]) if answer_ids and a in answer_ids]
        if known:
            loss += float(_batch_loss(lm, tokens[known], [prompts[i] for i in known],
                                      [answer_ids[answers[part][i]] for i in known])) * len(known)
            counted += len(known)
    return hits / max(len(idx), 1), loss / max(counted, 1)


def finetune_generative(cache_path, out, model: str, config: GenerativeConfig | None = None, device: str = "auto",
                        overwrite: bool = False, progress: bool = True) -> GenerativeReport:
    """Train LoRA adapters on the language model; `best/` by validation rank accuracy, resume from `last/`."""
    from tqdm.auto import tqdm

    config = config or GenerativeConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .rank import check_prompt

    check_prompt(config.prompt)
    if config.amp not in (None, "bfloat16", "float16"):
        raise FeatcacheError(f"amp must be bfloat16, float16 or None, got {config.amp!r}")
    lm = load_generative(model, device=device)
    if lm.instruction_aware:
        raise FeatcacheError(f"{model} is an InstructBLIP: featcache extracts its instruction-aware features "
                             f"(extract --features multimodal) and ranks or generates with it (zeroshot), but "
                             f"finetune --generative takes a BLIP-2 (OPT / Flan-T5) checkpoint")
    if config.amp == "float16" and not lm.decoder_only and lm.device.type == "cuda":
        raise FeatcacheError("float16 autocast makes T5 overflow and diverge (a known T5 property); use "
                             "--amp bfloat16 (or train in fp32 with no --amp on a GPU without bf16)")
    torch.manual_seed(config.seed)
    targets = inject_lora(lm, config)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    cache = open_cache(cache_path)
    try:
        lm.check_cache(cache.attrs, cache.path)
        if config.lora_qformer and "vision" not in cache.images:
            raise FeatcacheError(f"adapting the Q-Former reruns it on the ViT states, and {cache.path} has none: "
                                 f"extract it with --store-vision, or train without --lora-qformer")
        ok, texts, answers, rows, train, val, test = _split(cache, config)
        vocab = sorted(set(answers[train]))
        try:
            answer_ids = dict(zip(vocab, answer_tokens(lm, vocab)))
        except ValueError as exc:
            raise ZeroShotError(f"{exc}; fix or drop it from the dataset") from None
        from .rank import check_lengths

        try:  # every question checked before training starts
            check_lengths(lm, [config.prompt.format(t) for t in dict.fromkeys(texts)],
                          max(map(len, answer_ids.values()), default=1), "distinct question")
        except ValueError as exc:
            raise ZeroShotError(str(exc)) from None
        steps = config.epochs * -(-len(train) // config.batch_size)
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        sched = (torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(steps, 1)))
                 if config.schedule == "linear" else
                 torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.t_max, eta_min=config.eta_min))
        run = {"config": config.identity(), "model_fingerprint": lm.qformer_fingerprint(), "labels": vocab,
               "n_samples": int(len(texts)), "targets": targets}
        last, best, log = out / "last", out / "best", out / "metrics.jsonl"
        start, best_acc, best_loss, stale, history = 0, -1.0, float("inf"), 0, []
        from ..safe_folder import recover_folder

        recover_folder(last), recover_folder(best)  # a kill between a save's two renames loses no epoch
        if (last / "featcache.json").exists() and not overwrite:
            meta, tensors = load_folder(last, (STATE_FORMAT,), "generative fine-tune state")
            if meta["run"] != run:
                differ = [f"config.{k}" for k in sorted(set(run["config"]) | set(meta["run"]["config"]))
                          if run["config"].get(k) != meta["run"]["config"].get(k)]
                differ += [k for k in run if k != "config" and run[k] != meta["run"].get(k)]
                raise FeatcacheError(f"{out} holds a generative fine-tune with other settings, model or data "
                                     f"({', '.join(differ)} differ); pass --overwrite to start afresh or choose "
                                     f"another --out")
            _load_adapters(lm, unflatten("adapters", tensors))
            opt.load_state_dict(_optimizer_state(meta, tensors))
            sched.load_state_dict(meta["scheduler"])
            torch.set_rng_state(tensors["torch_rng"])
            start, best_acc, stale, history = meta["epoch"] + 1, meta["best_acc"], meta["stale"], meta["history"]
            best_loss = meta["best_loss"]
            log.write_text("".join(json.dumps(r) + "\n" for r in history))  # drop epochs a kill left unsaved
        elif overwrite:
            for p in (last, best, log):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        amp = dict(device_type=lm.device.type, dtype=getattr(torch, config.amp) if config.amp else torch.float32,
                   enabled=bool(config.amp) and lm.device.type == "cuda")
        seen, t0 = 0, time.perf_counter()
        for epoch in range(start, config.epochs):
            if stale >= config.patience:
                break
            rng = np.random.default_rng(config.seed * 10_000 + epoch)
            order = rng.permutation(train)
            lm.model.train()
            total = 0.0
            batches = [order[s:s + config.batch_size] for s in range(0, len(order), config.batch_size)]
            for part in tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, unit="batch"):
                used, inv = np.unique(rows[part], return_inverse=True)
                with torch.autocast(**amp):
                    if config.lora_qformer:  # the adapted Q-Former reruns on the cached ViT states
                        tokens = lm.tokens_from_vision(read_vision(cache, used))[inv]
                    else:
                        with torch.no_grad():
                            tokens = lm.project(cache.read("images", "query", used)).clone()[inv]
                    loss = _batch_loss(lm, tokens, [config.prompt.format(t) for t in texts[part]],
                                       [answer_ids[a] for a in answers[part]])
                if config.l1:
                    loss = loss + config.l1 * sum(p.abs().mean() for p in params)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(part)
            seen += len(order)
            lm.model.eval()
            val_acc, val_loss = evaluate_rank(lm, cache, val, texts, answers, rows, vocab, config.prompt, answer_ids)
            record = {"epoch": epoch, "train_loss": total / max(len(order), 1), "val_rank_accuracy": val_acc,
                      "val_loss": val_loss, "lr": sched.get_last_lr()[0]}
            history.append(record)
            with log.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            tie = abs(val_acc - best_acc) <= 1e-9
            if val_acc > best_acc + 1e-9 or (tie and val_loss < best_loss) or not len(val):  # ties: the lower loss
                best_acc, best_loss, stale = val_acc, val_loss, 0
                save_generative(best, lm, config, vocab, targets, epoch=epoch, val_accuracy=val_acc)
            else:
                stale += 1
            opt_state = opt.state_dict()
            save_folder(last, {"format": STATE_FORMAT, "run": run, "param_groups": opt_state["param_groups"],
                               "scheduler": sched.state_dict(), "epoch": epoch, "best_acc": best_acc,
                               "best_loss": best_loss, "stale": stale,
                               "history": history},
                        {**flatten("adapters", adapter_state(lm)), "torch_rng": torch.get_rng_state(),
                         **{f"optimizer.{pid}.{k}": t for pid, st in opt_state["state"].items() for k, t in st.items()}})
        elapsed = time.perf_counter() - t0
        if (best / "featcache.json").exists():
            _load_adapters(lm, load_generative_checkpoint(best)["adapters"])
        lm.model.eval()
        test_acc, benchmark, submission, predicted = None, None, None, []
        if len(test):
            test_acc = evaluate_rank(lm, cache, test, texts, answers, rows, vocab, config.prompt,
                                     predictions=predicted)[0]
            refs = read_references(cache, ok[test])
            if refs is not None:  # a benchmark: its own figures and its results file
                from heads.evaluate import with_benchmark

                scored = with_benchmark({}, predicted, refs)
                benchmark, submission = scored.get("benchmark"), scored["submission"]
    finally:
        cache.close()
    return GenerativeReport(out, len(history), best_acc, test_acc, seen / elapsed if elapsed > 0 else 0.0, targets,
                            start, history, benchmark, submission)


def _optimizer_state(meta: dict, tensors: dict) -> dict:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = t
    return {"state": state, "param_groups": meta["param_groups"]}


def _load_adapters(lm: GenerativeLM, adapters: dict) -> None:
    missing = set(adapters) - set(lm.model.state_dict())
    if missing:
        raise FeatcacheError(f"adapters do not fit this model (e.g. {sorted(missing)[:2]})")
    lm.model.load_state_dict({k: v.to(lm.device) for k, v in adapters.items()}, strict=False)


def save_generative(path: Path, lm: GenerativeLM, config: GenerativeConfig, labels: list[str], targets: list[str],
                    **extra) -> Path:
    meta = {"format": MODEL_FORMAT, "base_model": lm.model_id, "model_fingerprint": lm.qformer_fingerprint(),
            "config": asdict(config), "labels": labels, "targets": targets, **extra}
    return save_folder(path, meta, flatten("adapters", adapter_state(lm)))


def load_generative_checkpoint(path) -> dict:
    meta, tensors = load_folder(Path(path), (MODEL_FORMAT,), "generative fine-tune checkpoint")
    return {**meta, "adapters": unflatten("adapters", tensors)}


def is_generative_checkpoint_folder(path) -> bool:
    """Whether `path` is a `finetune --generative` best/ folder (a hub id or a model folder is not)."""
    from ..safe_folder import read_meta

    if not Path(path).is_dir():
        return False
    meta = read_meta(Path(path))  # never hangs on a FIFO, never reads a link out of the folder
    return meta is not None and meta.get("format") == MODEL_FORMAT


def load_generative_or_finetuned(model: str, device: str = "auto", dtype: str | None = None) -> GenerativeLM:
    """A generative checkpoint (hub id, folder, tiny-random-*), or a fine-tune folder with its adapters."""
    if is_generative_checkpoint_folder(model):
        return load_finetuned_generative(model, device=device, dtype=dtype)
    return load_generative(model, device=device, dtype=dtype)


def base_model_of(model: str) -> str:
    """`model` itself, or for a fine-tune folder the generative checkpoint its adapters belong to."""
    return load_generative_checkpoint(model)["base_model"] if is_generative_checkpoint_folder(model) else model


def load_finetuned_generative(path, device: str = "auto", dtype: str | None = None) -> GenerativeLM:
    """A generative fine-tune's best/ folder back as a GenerativeLM (base model + its adapters)."""
    state = load_generative_checkpoint(path)
    lm = load_generative(state["base_model"], device=device, dtype=dtype)
    if lm.qformer_fingerprint() != state["model_fingerprint"]:
        raise FeatcacheError(f"{path} was fine-tuned from another {state['base_model']!r} (fingerprint differs)")
    config = replace(GenerativeConfig(), **{k: v for k, v in state["config"].items()
                                            if k in GenerativeConfig.__dataclass_fields__})
    from ..safe_folder import check_lora_rank

    check_lora_rank(state["adapters"], config.lora_rank, "generative fine-tune")
    inject_lora(lm, config)
    _load_adapters(lm, state["adapters"])
    lm.model.eval()
    lm.model_id = str(path)
    return lm
