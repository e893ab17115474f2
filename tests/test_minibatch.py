"""Heads at scale: the sparse soft-target losses equal the dense ones; minibatch training reaches the full-batch
answers, in bf16 as in fp32; heads trained in one pass equal the same heads trained alone; seeded fits repeat."""

import numpy as np
import pytest
import torch

from featcache.cache.views import FactorizedFeatures
from heads import LogisticRegressionHead, MLPHead
from heads.targets import SoftTargets, sparse_bce, sparse_soft_ce
from heads.together import fit_together, group_heads


def structured(n_images=400, per_image=5, k=8, seed=0, noise=1.0):
    """A factorised VQA-like problem with real structure: each answer has a latent direction; a question's
    features carry its answer's direction, its image's features the mean of its questions' answers; soft targets
    in VQA's shape (the main answer 1.0 or 0.9, a second answer 0.3 or 0.6)."""
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    row = np.repeat(np.arange(n_images), per_image)
    answer = rng.integers(0, k, n)
    latent = rng.normal(size=(k, 6))
    image_latent = np.zeros((n_images, 6))
    np.add.at(image_latent, row, latent[answer])
    image = (image_latent / per_image) @ rng.normal(size=(6, 24)) + 0.3 * rng.normal(size=(n_images, 24))
    question = (latent[answer] + noise * rng.normal(size=(n, 6))) @ rng.normal(size=(6, 8))
    names = np.array([f"a{i}" for i in range(k)], dtype=object)
    y = names[answer]
    second = names[(answer + 1 + rng.integers(0, k - 1, n)) % k]
    soft = np.array([{a: 1.0 if rng.random() < 0.5 else 0.9, b: 0.3 if rng.random() < 0.5 else 0.6}
                     for a, b in zip(y, second)], dtype=object)
    X = FactorizedFeatures(image.astype(np.float32), row, question.astype(np.float32), 1)
    return X, y, soft


def heldout(X, y, soft, fraction=0.25):
    images = np.unique(X.image_row)
    held = np.isin(X.image_row, images[: int(len(images) * fraction)])
    tr, te = np.flatnonzero(~held), np.flatnonzero(held)
    return (X[tr], y[tr], soft[tr]), (X[te], y[te], soft[te])


def vqa_score(head, X, soft):
    targets = SoftTargets.build(soft, head.classes_, np.zeros(len(X), dtype=np.int64))
    return 100 * targets.score_of(np.arange(len(X)), np.argmax(head.predict_proba(X), axis=1)).mean()


def test_sparse_losses_equal_the_dense_ones_in_value_and_gradient():
    rng = np.random.default_rng(0)
    soft = [{str(a): float(s) for a, s in zip(rng.choice(9, rng.integers(1, 4), replace=False), rng.random(3))}
            for _ in range(50)]
    targets = SoftTargets.build(soft, np.array([str(i) for i in range(9)], dtype=object), np.zeros(50, np.int64))
    rows = rng.permutation(50)[:31]
    block, dense = targets.coo(rows), targets.dense(rows)
    z = torch.randn(31, 9, dtype=torch.float64, requires_grad=True)
    for sparse_fn, dense_fn in [
        (sparse_bce, lambda z: torch.nn.functional.binary_cross_entropy_with_logits(z, dense.double(), reduction="sum")),
        (sparse_soft_ce, lambda z: -((dense / dense.sum(1, keepdim=True)).double() * torch.log_softmax(z, 1)).sum()),
    ]:
        got = sparse_fn(z, block)
        (g_got,) = torch.autograd.grad(got, z)
        want = dense_fn(z)
        (g_want,) = torch.autograd.grad(want, z)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(g_got, g_want)


def test_take_slices_rows_in_any_order_with_repeats():
    soft = [{"a": 1.0}, {"b": 0.3, "c": 0.6}, {}, {"a": 0.3, "b": 0.3, "c": 1.0}]
    targets = SoftTargets.build(soft, np.array(["a", "b", "c"], dtype=object), np.array([0, 1, 2, 2]))
    rows = np.array([3, 1, 3, 0, 2])
    expected = torch.stack([targets.dense([r])[0] for r in rows])
    torch.testing.assert_close(targets.take(rows).coo().dense(), expected)
    assert targets.take(np.array([], dtype=np.int64)).coo().dense().shape == (0, 3)


@pytest.fixture(scope="module")
def problem():
    return heldout(*structured())


def test_minibatch_reaches_the_full_batch_answers(problem):
    (X, y, soft), (Xt, yt, soft_t) = problem
    full = LogisticRegressionHead(C=0.05, solver="lbfgs", max_iter=500, tol=1e-7).fit(X, y, soft_targets=soft)
    mini = LogisticRegressionHead(C=0.05, solver="minibatch", max_epochs=60, batch_size=128, lr=0.03,
                                  validation_fraction=0.0, precision="fp32").fit(X, y, soft_targets=soft)
    assert full.solver_ == "lbfgs" and mini.solver_ == "minibatch"
    same = np.mean(full.predict(Xt) == mini.predict(Xt))
    assert same >= 0.99, same
    assert abs(vqa_score(full, Xt, soft_t) - vqa_score(mini, Xt, soft_t)) <= 0.3


def test_linear_head_agrees_with_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    X, y, _ = structured(seed=1)
    Xd = np.asarray(X)
    ours = LogisticRegressionHead(C=0.5, standardize=False, solver="lbfgs", max_iter=500, tol=1e-8).fit(Xd, y)
    ref = LogisticRegression(C=0.5, max_iter=5000, tol=1e-10).fit(Xd, y)
    assert np.mean(ours.predict(Xd) == ref.predict(Xd)) >= 0.99


def test_bf16_products_give_the_fp32_answers(problem):
    (X, y, soft), (Xt, yt, soft_t) = problem
    fit = lambda p: LogisticRegressionHead(C=0.05, solver="minibatch", max_epochs=60, batch_size=128, lr=0.03,  # noqa
                                           validation_fraction=0.0, precision=p).fit(X, y, soft_targets=soft)
    fp32, bf16 = fit("fp32"), fit("bf16")
    assert bf16.precision_ == "bf16"
    assert np.mean(fp32.predict(Xt) == bf16.predict(Xt)) >= 0.99
    assert abs(vqa_score(fp32, Xt, soft_t) - vqa_score(bf16, Xt, soft_t)) <= 0.3


def test_one_pass_equals_each_head_alone_and_seeded_runs_repeat(problem):
    (X, y, soft), _ = problem
    val = np.flatnonzero(np.isin(X.image_row, np.unique(X.image_row)[::10]))
    make = lambda: [LogisticRegressionHead(C=c, solver="minibatch", max_epochs=4, batch_size=64, precision="fp32")  # noqa
                    for c in (0.01, 1.0)]
    together = fit_together(make(), X, y, soft, validation_rows=val)
    alone = [fit_together([h], X, y, soft, validation_rows=val)[0] for h in make()]
    for a, b in zip(together, alone):
        for (name, p), (_, q) in zip(a.linear_.state_dict().items(), b.linear_.state_dict().items()):
            assert torch.equal(p, q), name
        assert a.history_ == b.history_
    mlps = lambda: [MLPHead(hidden_sizes=h, dropout=0.3, max_epochs=3, precision="fp32") for h in ((16,), (32, 8))]  # noqa
    together = fit_together(mlps(), X, y, soft, validation_rows=val)
    alone = [fit_together([h], X, y, soft, validation_rows=val)[0] for h in mlps()]
    again = [fit_together([h], X, y, soft, validation_rows=val)[0] for h in mlps()]
    for a, b, c in zip(together, alone, again):  # dropout draws do not depend on the other heads
        for p, q, r in zip(a.net_.state_dict().values(), b.net_.state_dict().values(), c.net_.state_dict().values()):
            assert torch.equal(p, q) and torch.equal(q, r)
    assert group_heads([MLPHead(), MLPHead(hidden_sizes=(8,)), MLPHead.compact()]) == [[0, 1], [2]]


def test_a_rows_answer_does_not_depend_on_its_batch(problem):
    (X, y, soft), (Xt, _, _) = problem
    head = LogisticRegressionHead(solver="minibatch", max_epochs=2, precision="bf16").fit(X, y, soft_targets=soft)
    whole = head.predict_proba(Xt)
    parts = np.concatenate([head.predict_proba(Xt[np.arange(s, min(s + 7, len(Xt)))]) for s in range(0, len(Xt), 7)])
    np.testing.assert_array_equal(whole, parts)


def test_minibatch_validation_rows_are_whole_images(problem):
    (X, y, soft), _ = problem
    head = MLPHead(hidden_sizes=(8,), max_epochs=1).fit(X, y, soft_targets=soft)
    assert head.best_validation_score_ is not None
    from heads.minibatch import validation_split

    tr, va = validation_split(X.image_row, len(X), 0.1, np.random.default_rng(0))
    assert not set(X.image_row[tr]) & set(X.image_row[va]) and abs(len(va) / len(X) - 0.1) < 0.02


def test_the_solver_is_chosen_by_size():
    X, y, _ = structured()
    assert LogisticRegressionHead().fit(X, y).solver_ == "lbfgs"
    from heads.linear import LBFGS_MAX_COST, pass_cost

    assert pass_cost(X, 8) == (400 * 24 + 2000 * 8) * 8 < LBFGS_MAX_COST
    with pytest.raises(ValueError, match="solver must be"):
        LogisticRegressionHead(solver="sgd").fit(X, y)
    with pytest.raises(ValueError, match="batch_size must be"):
        LogisticRegressionHead(solver="minibatch", batch_size=0).fit(X, y)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_steps_gradient_is_autograds_of_the_loss_with_its_l1_term(bf16):
    """A training step's in-place gradients (heads/mixed.py: bf16 copies made once, L1 added in place) equal
    autograd's gradient of loss + l1 * mean|w| per matrix, run the textbook way under torch.autocast."""
    from heads.factorized import Parts
    from heads.minibatch import Member, _member_step
    from heads.mlp import ClassifierNet

    torch.manual_seed(0)
    net = ClassifierNet(24, 8, (16, 12), 5, 0.0, False)
    reference = ClassifierNet(24, 8, (16, 12), 5, 0.0, False)
    reference.load_state_dict(net.state_dict())
    batch = Parts(torch.randn(7, 24), torch.tensor([0, 0, 1, 2, 2, 3, 4, 5, 6, 6]), torch.randn(10, 8))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    m = Member(net, "ce", 0.0, l1=0.3, weights=net.weight_matrices)
    m.opt = torch.optim.SGD(net.parameters(), lr=0.0)  # a step that leaves the weights: only the gradients matter
    _member_step(m, batch, y, None, bf16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = reference(batch)
    loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction="mean")
    (loss + 0.3 * sum(w.abs().mean() for w in reference.weight_matrices())).backward()
    for (name, got), want in zip(net.named_parameters(), reference.parameters()):
        assert got.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5 if not bf16 else 2e-2,
                                   atol=1e-6 if not bf16 else 2e-3, msg=name)
    m.master.zero_grad()  # a second step starts from zero gradients, the bf16 copies refreshed
    assert all(p.grad.abs().sum() == 0 for p in net.parameters())


def test_a_fitted_head_keeps_no_gradients(problem):
    """(they would follow the weights into float64: on VQAv2's itc a logistic regression's are 210 MB, the paper's
    MLP's 440 MB, per fitted head)"""
    (X, y, soft), _ = problem
    fitted = [LogisticRegressionHead(solver=s, max_epochs=2, max_iter=5).fit(X, y, soft_targets=soft).linear_
              for s in ("minibatch", "lbfgs")]
    fitted.append(MLPHead(hidden_sizes=(8,), max_epochs=2).fit(X, y, soft_targets=soft).net_)
    for net in fitted:
        assert all(p.grad is None for p in net.parameters())


def test_the_heap_guard_trims_only_once_memory_grew_past_its_slack():
    from heads.heap import HeapGuard, resident_bytes

    if resident_bytes() is None:
        pytest.skip("no /proc/self/statm here: the guard does nothing")
    guard = HeapGuard(slack=64 << 20)
    assert not guard.check()
    grown = np.ones(160 << 20, dtype=np.uint8)  # resident: every page written
    assert guard.check()  # past the slack: trimmed, and the new level is the base
    assert not guard.check()
    del grown
