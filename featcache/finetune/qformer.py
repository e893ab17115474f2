"""Fine-tuning mode: LoRA on the Q-Former (optionally the ViT) plus the heads' ClassifierNet.

The checkpoint's pretrained query tokens, text embeddings and projections are used as they are
(frozen), unlike the reference code, which re-initialised them and then dropped them from its
checkpoints. A checkpoint here holds everything that was trained (LoRA adapters, the classifier),
the label vocabulary and the base model's identity, and reloads to the same predictions.

With the ViT frozen its output never changes, so `extract --store-vision` can keep it and
`finetune --from-cache` trains without running the ViT at all.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.factorized import Parts, token_normalize
from heads.mlp import PAPER_HIDDEN_SIZES, ClassifierNet

from ..datasets.pairs import check_questions
from ..errors import ExtractError, FeatcacheError
from ..models.backbone import Backbone, load_backbone
from . import checkpoints
from .data import CachedSource, _loader, split_validation

QFORMER_TARGETS = ["query", "key", "value", "dense"]
VISION_TARGETS = ["qkv", "projection", "fc1", "fc2"]


@dataclass
class FinetuneConfig:
    view: str = "itc"
    hidden_sizes: tuple[int, ...] = PAPER_HIDDEN_SIZES  # the paper's classifier, as MLPHead.reference()
    dropout: float = 0.5
    batch_norm: bool = True
    lora_rank: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.1
    lora_vision: bool = False
    lr: float = 1e-4
    weight_decay: float = 1e-6
    l1: float = 0.01
    t_max: int = 500
    eta_min: float = 1e-6
    epochs: int = 10
    batch_size: int = 32
    grad_accum: int = 1
    validation_fraction: float = 0.1
    patience: int = 3
    seed: int = 0
    amp: str | None = None
    gradient_checkpointing: bool = False
    eval_split: str = "test"
    """The split evaluated once with the best epoch's weights (a benchmark's val or testdev)."""

    def identity(self) -> dict:
        """What a resumed run must share with the run it continues (not where it is evaluated)."""
        d = asdict(self)
        d.pop("epochs")
        d.pop("eval_split")
        d["hidden_sizes"] = list(d["hidden_sizes"])
        return d


class FinetuneNet(nn.Module):
    """Frozen BLIP-2 parts with LoRA adapters -> view features -> ClassifierNet."""

    def __init__(self, backbone: Backbone, config: FinetuneConfig, n_classes: int) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise FeatcacheError("fine-tuning needs peft: pip install 'featcache[finetune]'") from None

        super().__init__()
        if config.view not in ("itc", "pooled"):
            raise FeatcacheError(f"fine-tuning supports the views itc and pooled, not {config.view!r}")
        if not backbone.has_text:
            raise FeatcacheError(f"{backbone.model_id} has no Q-Former text path: fine-tune a retrieval checkpoint")
        self.backbone = backbone
        self.config = config
        self.blip = backbone.model
        self.blip.requires_grad_(False)
        lora = dict(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout)
        inject_adapter_in_model(LoraConfig(target_modules=QFORMER_TARGETS, **lora), self.blip.qformer)
        if config.lora_vision:
            inject_adapter_in_model(LoraConfig(target_modules=VISION_TARGETS, **lora), self.blip.vision_model)
        if config.gradient_checkpointing:
            self.blip.qformer.gradient_checkpointing_enable()
        dims = backbone.dims
        tokens = dims["query_tokens"]
        image_width = tokens * dims["proj"] if config.view == "itc" else dims["query"]
        self.image_tokens = tokens if config.view == "itc" else 1
        self.head = ClassifierNet(image_width, dims["proj"], tuple(config.hidden_sizes), n_classes,
                                  config.dropout, config.batch_norm).to(backbone.device)

    def trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def forward(self, batch: dict) -> torch.Tensor:
        bb = self.backbone
        if "vision" in batch:
            image_embeds = batch["vision"].to(bb.device, bb.compute_dtype)
        elif self.config.lora_vision:
            image_embeds = bb.vision_states(batch["pixel_values"])
        else:
            with torch.no_grad():  # frozen ViT: no activations kept for backward
                image_embeds = bb.vision_states(batch["pixel_values"])
        query = bb.queries(image_embeds)
        image = bb.project_queries(query).flatten(1) if self.config.view == "itc" else query.mean(1)
        _, text = bb.text_states(batch["input_ids"], batch["attention_mask"])
        parts = Parts(image.float(), batch["row"].to(bb.device), text.float(), self.image_tokens)
        return self.head(token_normalize(parts))


# -- checkpoints ----------------------------------------------------------------------------------
def _adapter_state(net: FinetuneNet) -> dict:
    from peft import get_peft_model_state_dict

    state = {"qformer": get_peft_model_state_dict(net.blip.qformer)}
    if net.config.lora_vision:
        state["vision"] = get_peft_model_state_dict(net.blip.vision_model)
    return state


def _load_adapters(net: FinetuneNet, state: dict) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(net.blip.qformer, state["qformer"])
    if "vision" in state:
        set_peft_model_state_dict(net.blip.vision_model, state["vision"])


def _model_meta(net: FinetuneNet, labels: list[str], **extra) -> dict:
    return {"labels": labels, "config": asdict(net.config), "provenance": net.backbone.provenance(),
            "base_model": net.backbone.model_id, **extra}


@dataclass
class FinetuneReport:
    out: Path
    epochs_run: int
    best_validation_accuracy: float
    test_metrics: dict | None
    samples_per_second: float
    resumed_from_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    submission: list | dict | None = None
    """The evaluated split's predictions in its benchmark's results format (benchmark datasets only)."""
    test_outputs: dict | None = None
    """The evaluated split's sample indices and top 5 (label indices and probabilities): the report's inputs."""


def finetune(source, out: str | Path, model: str | Backbone, config: FinetuneConfig | None = None,
             device: str = "auto", init_head: str | None = None, overwrite: bool = False, workers: int = 2,
             progress: bool = True, trust_pickle: bool = False) -> FinetuneReport:
    """Train LoRA + classifier; keep the best checkpoint (`best/`) by validation accuracy; resume from `last/`."""
    from tqdm.auto import tqdm

    config = config or FinetuneConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = model if isinstance(model, Backbone) else load_backbone(model, device=device)
    if isinstance(source, CachedSource):  # its ViT states must come from this very model
        source.cache.check_compatible(backbone.provenance(), what=f"--model {backbone.model_id}")
    torch.manual_seed(config.seed)
    samples = source.samples
    labels = sorted({s.answer for s in samples if s.split == "train"})
    label_index = {a: i for i, a in enumerate(labels)}
    net = FinetuneNet(backbone, config, len(labels))
    if init_head:
        _init_from_head(net, init_head, labels, config.view, trust_pickle)
    params = list(net.trainable().values())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.t_max, eta_min=config.eta_min)
    train_idx, val_idx = split_validation(samples, config.validation_fraction, config.seed)
    test_idx = np.array([i for i, s in enumerate(samples) if s.split == config.eval_split], dtype=np.int64)

    run = {"config": config.identity(), "model_fingerprint": backbone.fingerprint, "labels": labels,
           "n_samples": len(samples)}
    last, best_path, log = out / checkpoints.LAST, out / checkpoints.BEST, out / "metrics.jsonl"
    start_epoch, best_acc, stale, history = 0, -1.0, 0, []
    found = checkpoints.find(out, checkpoints.LAST)
    if found is not None and not overwrite:
        state = checkpoints.load_state(found, trust_pickle)
        if state["run"] != run:
            raise ExtractError(f"{out} holds a fine-tune with other settings, model or data; pass --overwrite to "
                               f"start afresh or choose another --out")
        _load_adapters(net, state["adapters"])
        net.head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_acc, stale, history = state["epoch"] + 1, state["best_acc"], state["stale"], state["history"]
    elif overwrite:
        for p in (last, best_path, out / "last.pt", out / "best.pt", log):
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps({**run, "base_model": backbone.model_id}, indent=1) + "\n")

    dev = backbone.device
    amp = dict(device_type=dev.type, dtype=getattr(torch, config.amp), enabled=bool(config.amp) and dev.type == "cuda") \
        if config.amp else dict(device_type=dev.type, enabled=False)
    seen, t_start = 0, time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stale >= config.patience:
            break
        rng = np.random.default_rng(config.seed * 10_000 + epoch)
        net.train()
        net.blip.vision_model.eval()  # frozen ViT: no dropout
        bar = tqdm(_loader(source, train_idx, config, backbone.tokenize, label_index, rng, workers),
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, unit="batch")
        total, correct, n = 0.0, 0, 0
        for step, batch in enumerate(bar):
            with torch.autocast(**amp):
                logits = net(batch)
            y = batch["labels"].to(dev)
            loss = nn.functional.cross_entropy(logits.float(), y)
            if config.l1:
                loss = loss + config.l1 * sum(w.abs().mean() for w in net.head.weight_matrices())
            (loss / config.grad_accum).backward()
            if (step + 1) % config.grad_accum == 0:
                opt.step()
                opt.zero_grad()
                sched.step()
            total += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
            bar.set_postfix(loss=f"{total / n:.4f}", acc=f"{correct / n:.3f}")
        opt.zero_grad()
        seen += n
        val_acc = evaluate_net(net, source, val_idx, config, label_index, workers)["accuracy"] if len(val_idx) else correct / max(n, 1)
        record = {"epoch": epoch, "train_loss": total / max(n, 1), "train_accuracy": correct / max(n, 1),
                  "val_accuracy": val_acc, "lr": sched.get_last_lr()[0]}
        history.append(record)
        with log.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if val_acc > best_acc + 1e-9:
            best_acc, stale = val_acc, 0
            checkpoints.save_model(best_path, _model_meta(net, labels, epoch=epoch, val_accuracy=val_acc),
                                   _adapter_state(net), net.head.state_dict())
        else:
            stale += 1
        checkpoints.save_state(last, run, _adapter_state(net), net.head.state_dict(), opt.state_dict(),
                               sched.state_dict(), {"epoch": epoch, "best_acc": best_acc, "stale": stale,
                                                    "history": history})
    elapsed = time.perf_counter() - t_start
    test = None
    if best_path.exists():  # continue with the best epoch's weights
        best = checkpoints.load_model(best_path)
        _load_adapters(net, best["adapters"])
        net.head.load_state_dict(best["head"])
    submission, outputs = None, None
    if len(test_idx):
        test = evaluate_net(net, source, test_idx, config, label_index, workers, detailed=True)
        outputs = {"idx": test_idx, "top": test.pop("top"), "top_p": test.pop("top_p"), "labels": labels}
        refs = source.references(test_idx)
        if refs is not None:  # a benchmark: its own figures (VQA accuracy, ...) and its results file
            from heads.evaluate import with_benchmark

            predicted = np.asarray(labels, dtype=object)[test.pop("predictions")]
            test = with_benchmark(test, predicted, refs)
            submission = test.pop("submission")
            if not refs.scored:  # a test-dev split: predicted, not scored
                test = {"n": test["n"], "unscored": True}
        test.pop("predictions", None)
    return FinetuneReport(out, len(history), best_acc, test, seen / elapsed if elapsed > 0 else 0.0, start_epoch, history,
                          submission, outputs)


def _init_from_head(net: FinetuneNet, path: str, labels: list[str], view: str, trust_pickle: bool = False) -> None:
    """Start the classifier from an MLPHead trained on the cache (same view, classes and architecture)."""
    from heads.mlp import MLPHead
    from heads.trained import TrainedHead

    trained = TrainedHead.load(path, trust_pickle)
    head = trained.head
    if not isinstance(head, MLPHead) or trained.view != view:
        raise FeatcacheError(f"--init-head needs an MLP head trained on view {view!r}; {path} is a "
                             f"{type(head).__name__} on view {trained.view!r}")
    if list(head.classes_) != labels:
        raise FeatcacheError(f"--init-head {path} was trained on other classes than this dataset's training split")
    if head.normalize != "token" or head.standardize:
        raise FeatcacheError("--init-head needs an MLPHead(normalize='token', standardize=False), e.g. "
                             "MLPHead.reference(): the fine-tune feeds the classifier token-normalised features")
    cfg = net.config
    if (tuple(head.hidden_sizes), head.batch_norm) != (tuple(cfg.hidden_sizes), cfg.batch_norm):
        raise FeatcacheError(f"--init-head {path} has hidden sizes {tuple(head.hidden_sizes)} (batch norm "
                             f"{head.batch_norm}); this fine-tune's classifier has {tuple(cfg.hidden_sizes)} (batch "
                             f"norm {cfg.batch_norm}). Pass matching --hidden / --batch-norm")
    net.head.load_state_dict({k: v.float() for k, v in head.net_.state_dict().items()})


@torch.no_grad()
def evaluate_net(net: FinetuneNet, source, idx, config, label_index, workers: int = 0, detailed: bool = False) -> dict:
    net.eval()
    preds, ys, tops, top_ps = [], [], [], []
    for batch in _loader(source, idx, config, net.backbone.tokenize, label_index, None, workers):
        logits = net(batch).float()
        preds.append(logits.argmax(1).cpu())
        ys.append(batch["labels"])
        if detailed:  # the top 5 with their probabilities, for the report's gallery and predictions.jsonl
            p, c = torch.softmax(logits, 1).topk(min(5, logits.shape[1]), dim=1)
            tops.append(c.cpu())
            top_ps.append(p.cpu())
    pred, y = torch.cat(preds).numpy(), torch.cat(ys).numpy()
    out = {"n": int(len(y)), "accuracy": float((pred == y).mean()) if len(y) else 0.0}
    if detailed:
        out["predictions"] = pred
        out["top"] = torch.cat(tops).numpy() if tops else np.zeros((0, 1), dtype=np.int64)
        out["top_p"] = torch.cat(top_ps).double().numpy() if top_ps else np.zeros((0, 1))
        from sklearn.metrics import f1_score

        from heads.evaluate import balanced_accuracy

        labels = list(range(len(label_index)))
        out["macro_f1"] = float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))
        out["balanced_accuracy"] = balanced_accuracy(y, pred)
    return out


def load_finetuned(path: str | Path, model: str | Backbone | None = None, device: str = "auto",
                   trust_pickle: bool = False) -> FinetuneNet:
    """A checkpoint back as a FinetuneNet in eval mode, on its base model (or `model`, which must match)."""
    state = checkpoints.load_model(path, trust_pickle)
    cfg = dict(state["config"])
    cfg["hidden_sizes"] = tuple(cfg["hidden_sizes"])
    from ..safe_folder import check_lora_rank

    check_lora_rank(state["adapters"], cfg.get("lora_rank"), "fine-tune checkpoint")  # sizes believed only when
    widths = {int(t.shape[0]) for t in state["head"].values() if t.ndim == 2}  # the tensors have them
    if not set(cfg["hidden_sizes"]) <= widths:
        raise FeatcacheError(f"{path}: hidden sizes {cfg['hidden_sizes']} do not match its classifier's tensors "
                             f"(widths {sorted(widths)}); it is damaged or crafted: save it again")
    if isinstance(model, Backbone):
        backbone = model  # a freshly loaded one: adapters are injected below
    else:
        backbone = load_backbone(model or state["base_model"], device=device)
    if backbone.fingerprint != state["provenance"]["model_fingerprint"]:
        raise FeatcacheError(f"{path} was fine-tuned from {state['base_model']!r} (fingerprint "
                             f"{state['provenance']['model_fingerprint']}), not from {backbone.model_id!r}")
    net = FinetuneNet(backbone, FinetuneConfig(**cfg), len(state["labels"]))
    _load_adapters(net, state["adapters"])
    net.head.load_state_dict(state["head"])
    net.labels = state["labels"]
    return net.eval()


@torch.no_grad()
def predict_finetuned(checkpoint: str | Path | FinetuneNet, pairs: list[tuple[str, str]], model: str | None = None,
                      device: str = "auto", top_k: int = 3, trust_pickle: bool = False, open_image=None,
                      batch_size: int = 32) -> list[dict]:
    """Top-k answers for (image path, question) pairs with a fine-tune checkpoint (or a loaded one);
    `open_image(ref, draft_size)` decodes images that are not file paths (a dataset's keys)."""
    check_questions(pairs)  # before any model is loaded
    net = checkpoint if isinstance(checkpoint, FinetuneNet) else load_finetuned(checkpoint, model, device, trust_pickle)
    bb, pre = net.backbone, net.backbone.preprocessor
    probas = []
    for start in range(0, len(pairs), batch_size):  # a batch of pairs at a time: memory stays one batch's
        part = pairs[start:start + batch_size]
        position = {k: i for i, k in enumerate(dict.fromkeys(p for p, _ in part))}
        pixels = np.stack([pre.resize_uint8(open_image(k, pre.draft_size) if open_image else pre.load(k))
                           for k in position])
        batch = {"pixel_values": torch.from_numpy(pixels), "row": torch.tensor([position[p] for p, _ in part]),
                 **bb.tokenize([q for _, q in part])}
        probas.append(torch.softmax(net(batch).float(), dim=1).cpu().numpy())
    proba = np.concatenate(probas)
    out = []
    for (path_, q), p in zip(pairs, proba):
        order = np.argsort(-p)[:top_k]
        out.append({"image": path_, "question": q, "answer": net.labels[order[0]], "probability": float(p[order[0]]),
                    "top_k": [(net.labels[j], float(p[j])) for j in order]})
    return out
