"""Registry-driven model tests: every `MODEL_REGISTRY` entry passes the same checks.

Shapes, no NaN (padding, empty history, a lone real item), leakage by perturbation (docs/design.md),
K candidates in one pass == K single predictions, a few optimizer steps lower the loss,
hidden-state / attention outputs, config JSON round trip and validation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import ENCODED_ITEM_INPUTS
from models.config import ModelConfig, config_for_spec
from models.feature_spec import FeatureSpec
from models.features import History, collate, encode
from models.layers import mean_over_tags
from models.registry import MODEL_REGISTRY, build_model, count_parameters
from models.vocab import QuestionVocab

NAMES = sorted(MODEL_REGISTRY)
# the registry models plus SAINT+ in the lean student's shape (no encoder, no cross-attention)
VARIANTS = [*NAMES, "saint_plus_lean"]
LEAN = {"encoder_layers": 0, "cross_attention": False}


def variant_config(variant: str, **sizes: object) -> ModelConfig:
    """config_for_spec of a registry name, or of SAINT+ in the lean shape for "saint_plus_lean"."""
    if variant == "saint_plus_lean":
        return config_for_spec("saint_plus", SPEC, VOCAB, **sizes, **LEAN)
    return config_for_spec(variant, SPEC, VOCAB, **sizes)


N_RAW_QUESTIONS = 30
SPEC = FeatureSpec(window=16, n_questions=N_RAW_QUESTIONS + 2, n_parts=9)
VOCAB = QuestionVocab.build(
    np.arange(N_RAW_QUESTIONS) * 10,
    np.arange(N_RAW_QUESTIONS) % 7 + 1,
    [[q % 4, 4 + q % 3] if q % 3 else [q % 4] for q in range(N_RAW_QUESTIONS)],
)
PARTS = VOCAB.item_table()


def random_history(rng: np.random.Generator, n: int) -> History:
    """n interactions in bundles of 1-3 items, with elapsed times and explanation flags."""
    sizes = rng.integers(1, 4, size=n)
    bundle = np.repeat(np.arange(n), sizes)[:n].astype(np.int64)
    gaps = rng.integers(1_000, 3_600_000, size=n)
    timestamp = np.cumsum(gaps)[bundle].astype(np.int64)  # items of a bundle share a timestamp
    return History(
        question=rng.integers(2, VOCAB.size, size=n).astype(np.int64),
        correct=rng.integers(0, 2, size=n).astype(np.int8),
        timestamp=timestamp,
        bundle=bundle,
        elapsed_ms=rng.uniform(500, 60_000, size=n).astype(np.float32),
        explanation=rng.integers(0, 2, size=n).astype(np.int8),
    )


def to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def tiny_model(name: str, seed: int = 0, randomize: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = variant_config(name, d_model=16, n_layers=2, n_heads=2, ffn_mult=2, dropout=0.0)
    model = build_model(cfg)
    if randomize:
        # Large random weights so every input visibly moves the output (the logistic model starts
        # at zero ability weights, which would make the "earlier answer moves it" check vacuous).
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    return model.eval()


def logits_of(model: torch.nn.Module, batch: dict[str, np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        out = model(to_torch(batch))
    assert isinstance(out, torch.Tensor)
    return out


def test_registry_names_and_unknown_name() -> None:
    assert set(MODEL_REGISTRY) == {"saint", "saint_plus", "dkt", "logistic"}
    with pytest.raises(ValueError, match="known: dkt, logistic, saint, saint_plus"):
        build_model(ModelConfig(name="transformer"))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_no_nan_with_padding(name: str) -> None:
    rng = np.random.default_rng(1)
    model = tiny_model(name)
    items = [
        encode(random_history(rng, 40), SPEC, PARTS),  # full window
        encode(random_history(rng, 5), SPEC, PARTS),  # padded
        encode(random_history(rng, 1), SPEC, PARTS),  # everything padded except one
        encode(
            History.empty(), SPEC, PARTS, candidates=np.array([3])
        ),  # empty history, 1 candidate
    ]
    batch = collate(items)
    logits = logits_of(model, batch)
    assert logits.shape == (4, SPEC.window)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # T = 1: empty history + one candidate, alone in its batch
    single = logits_of(model, collate([items[3]]))
    assert single.shape == (1, 1) and torch.isfinite(single).all()
    # padding never changes the real items of a row
    alone = logits_of(model, collate([items[1]]))
    torch.testing.assert_close(logits[1, :5], alone[0], atol=1e-5, rtol=0)


def _perturb_from(
    batch: dict[str, np.ndarray], row: int, k: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Randomise response-side info of bundles >= k and everything of bundles > k in one row."""
    out = {name: arr.copy() for name, arr in batch.items()}
    real = batch["question"][row] != 0
    same_or_later = real & (batch["bundle"][row] >= k)
    later = real & (batch["bundle"][row] > k)
    n_resp, n_later = int(same_or_later.sum()), int(later.sum())
    out["response"][row, same_or_later] = rng.integers(1, 3, n_resp)
    out["elapsed"][row, same_or_later] = rng.random(n_resp).astype(np.float32)
    out["elapsed_bucket"][row, same_or_later] = rng.integers(1, SPEC.n_elapsed_buckets, n_resp)
    out["explanation"][row, same_or_later] = rng.integers(1, 3, n_resp)
    new_q = rng.integers(2, VOCAB.size, n_later)
    out["question"][row, later] = new_q
    out["part"][row, later] = PARTS.parts[new_q]
    out["tags"][row, later] = PARTS.tags[new_q][:, : out["tags"].shape[2]]
    out["stats"][row, later] = rng.random((n_later, out["stats"].shape[2])).astype(np.float32)
    out["lag"][row, later] = rng.random(n_later).astype(np.float32)
    out["lag_bucket"][row, later] = rng.integers(1, SPEC.n_lag_buckets, n_later)
    return out


def test_saint_plus_reads_earlier_elapsed_and_explanation() -> None:
    """The other side of the leak test for the response-side time features: changing an EARLIER
    bundle's elapsed time or explanation flag moves later predictions (the inputs are wired in)."""
    rng = np.random.default_rng(3)
    model = tiny_model("saint_plus")
    batch = collate([encode(random_history(rng, 30), SPEC, PARTS)])
    base = logits_of(model, batch)
    bundles = batch["bundle"][0]
    last = bundles == bundles.max()
    earlier = bundles < bundles.max()
    for name, new_values in (
        ("elapsed", lambda n: rng.random(n).astype(np.float32)),
        ("elapsed_bucket", lambda n: rng.integers(1, SPEC.n_elapsed_buckets, n)),
        ("explanation", lambda n: 3 - batch["explanation"][0, earlier]),
    ):
        changed = {k: v.copy() for k, v in batch.items()}
        changed[name][0, earlier] = new_values(int(earlier.sum()))
        moved = (logits_of(model, changed)[0, last] - base[0, last]).abs().max().item()
        assert moved > 1e-5, f"saint_plus ignores earlier {name}"


@pytest.mark.parametrize("name", VARIANTS)
def test_no_leak_from_same_or_later_bundles(name: str) -> None:
    rng = np.random.default_rng(2)
    model = tiny_model(name)
    batch = collate(
        [encode(random_history(rng, 30), SPEC, PARTS), encode(random_history(rng, 9), SPEC, PARTS)]
    )
    base = logits_of(model, batch)
    bundles = batch["bundle"][0]
    multi = [b for b in np.unique(bundles) if (bundles == b).sum() > 1]
    assert multi, "test history should contain multi-item bundles"
    moved_by_earlier = 0
    for k in np.unique(bundles):
        upto = bundles <= k  # earlier bundles and k itself must not move
        for _ in range(3):
            perturbed = _perturb_from(batch, 0, int(k), rng)
            new = logits_of(model, perturbed)
            diff = (new[0, upto] - base[0, upto]).abs().max().item()
            assert diff <= 1e-6, f"{name}: bundle {k} saw same-bundle or later info (diff {diff})"
            torch.testing.assert_close(new[1], base[1], atol=0, rtol=0)  # other rows untouched
        if k > 0:
            # The test can fail: flipping the answers of the previous bundle moves bundle k.
            flipped = {n: a.copy() for n, a in batch.items()}
            prev = bundles == k - 1
            flipped["response"][0, prev] = 3 - flipped["response"][0, prev]
            new = logits_of(model, flipped)
            if (new[0, bundles == k] - base[0, bundles == k]).abs().max().item() > 1e-4:
                moved_by_earlier += 1
    n_bundles = len(np.unique(bundles))
    assert moved_by_earlier >= (n_bundles - 1) // 2, f"{name}: earlier answers barely matter"


@pytest.mark.parametrize("name", VARIANTS)
def test_k_candidates_in_one_pass_equal_single_predictions(name: str) -> None:
    rng = np.random.default_rng(3)
    model = tiny_model(name)
    history = random_history(rng, 25)
    candidates = np.array([2, 7, 7, 19, 31])
    ts = int(history.timestamp[-1]) + 90_000
    together = encode(history, SPEC, PARTS, candidates=candidates, candidate_timestamp=ts)
    joint = logits_of(model, collate([together]))[0, -len(candidates) :]
    singles = torch.stack(
        [
            logits_of(
                model,
                collate(
                    [encode(history, SPEC, PARTS, candidates=np.array([c]), candidate_timestamp=ts)]
                ),
            )[0, -1]
            for c in candidates
        ]
    )
    torch.testing.assert_close(joint, singles, atol=1e-5, rtol=0)
    # and the same in a padded batch next to another learner
    other = encode(
        random_history(rng, 3), SPEC, PARTS, candidates=np.array([4]), candidate_timestamp=None
    )
    batched = logits_of(model, collate([other, together]))[1, -len(candidates) :]
    torch.testing.assert_close(batched, joint, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_few_steps_lower_the_loss(name: str) -> None:
    rng = np.random.default_rng(4)
    torch.manual_seed(0)
    cfg = variant_config(name, d_model=16, n_layers=1, n_heads=2, ffn_mult=2, dropout=0.0)
    model = build_model(cfg).train()
    lengths = [16, 12, 7, 3]
    batch = to_torch(collate([encode(random_history(rng, n), SPEC, PARTS) for n in lengths]))
    labels = (batch["response"] == 2).float()
    scored = batch["response"] > 0  # padding (and unanswered candidates) carry no label
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        logits = model(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[scored], labels[scored])
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02, losses


@pytest.mark.parametrize("name", NAMES)
def test_hidden_states_and_attentions(name: str) -> None:
    rng = np.random.default_rng(5)
    model = tiny_model(name)
    batch = to_torch(collate([encode(random_history(rng, n), SPEC, PARTS) for n in (16, 6)]))
    b, t = batch["question"].shape
    with torch.no_grad():
        plain = model(batch)
        out = model(batch, output_hidden_states=True, output_attentions=True)
    torch.testing.assert_close(out.logits, plain, atol=1e-6, rtol=0)
    assert out["logits"] is out.logits
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) >= 1
    for h in out.hidden_states:
        assert h.shape[:2] == (b, t) and h.dim() == 3 and torch.isfinite(h).all()
    assert isinstance(out.attentions, tuple)
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    if name.startswith("saint"):
        assert len(out.hidden_states) == cfg.n_layers + 1
        assert len(out.attentions) == cfg.n_layers
        for a in out.attentions:
            assert a.shape == (b, cfg.n_heads, t, t + 1)  # null key + T responses
            torch.testing.assert_close(a.sum(-1), torch.ones(b, cfg.n_heads, t))
            # the first bundle sees only the null key
            assert torch.all(a[0, :, 0, 1:] == 0)
        assert out.encoder_attentions is not None and len(out.encoder_attentions) == cfg.n_layers
        for a in out.encoder_attentions:
            assert a.shape == (b, cfg.n_heads, t, t)
        assert out.encoder_hidden_states is not None
        assert len(out.encoder_hidden_states) == cfg.n_layers + 1
    if name == "dkt":
        assert len(out.hidden_states) == cfg.n_layers + 1
        assert out.attentions == ()
    only_hidden = model(batch, output_hidden_states=True)
    assert only_hidden.attentions is None


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = ModelConfig(
        name="saint",
        n_questions=50,
        d_model=32,
        n_heads=4,
        time_encoding="bucket",
        use_explanation=False,
    )
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert ModelConfig.from_json(path) == cfg
    assert ModelConfig.from_dict(json.loads(path.read_text())) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_config_for_spec_matches_encoding() -> None:
    cfg = config_for_spec("saint_plus", SPEC, VOCAB, d_model=8, n_heads=2)
    assert cfg.n_questions == VOCAB.size and cfg.seq_len == SPEC.window
    assert (
        cfg.n_lag_buckets == SPEC.n_lag_buckets and cfg.n_elapsed_buckets == SPEC.n_elapsed_buckets
    )
    default_spec = FeatureSpec()
    default_cfg = ModelConfig()
    assert default_cfg.n_lag_buckets == default_spec.n_lag_buckets
    assert default_cfg.n_elapsed_buckets == default_spec.n_elapsed_buckets


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 30, "n_heads": 4}, "divisible by n_heads"),
        ({"time_encoding": "sinusoid"}, "time_encoding must be one of"),
        ({"dropout": 1.5}, "dropout"),
        ({"n_layers": 0}, "n_layers must be >= 1"),
        ({"seq_len": "100"}, "seq_len must be an integer"),
        ({"use_explanation": "yes"}, "use_explanation"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_config_unknown_keys_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model config key.*d_modle.*n_head\\b"):
        ModelConfig.from_dict({"d_modle": 3, "n_head": 2})
    with pytest.raises(ValueError, match="not found"):
        ModelConfig.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelConfig.from_json(bad)


def test_parameter_counts_are_positive_and_logistic_is_small() -> None:
    counts = {name: count_parameters(tiny_model(name, randomize=False)) for name in NAMES}
    assert all(c > 0 for c in counts.values())
    assert counts["logistic"] < 2 * VOCAB.size + 50
    assert counts["saint_plus"] > counts["saint"]


@pytest.mark.parametrize("decay", [False, True])
def test_fused_training_attention_equals_the_spelled_out_one(decay: bool) -> None:
    """In training (no weight dropout) attention runs through SDPA; asking for the maps runs the
    spelled-out softmax (the export path). Outputs and gradients must agree."""
    from models.layers import Attention, bundle_distance, response_mask

    torch.manual_seed(0)
    attn = Attention(32, 4, dropout=0.0, decay=decay).train()
    bundle = torch.tensor([[0, 1, 1, 2, 3, 3, 4, 5], [0, 0, 1, 2, 3, 4, 0, 0]])
    question = torch.tensor([[2, 3, 4, 5, 6, 7, 8, 9], [2, 3, 4, 5, 6, 7, 0, 0]])
    mask = response_mask(bundle, question)  # (B, 1, T, T + 1)
    distance = bundle_distance(bundle, mask, null_key=True) if decay else None
    x = torch.randn(2, 8, 32, requires_grad=True)
    memory = torch.randn(2, 9, 32, requires_grad=True)
    grads = []
    outs = []
    for need_weights in (False, True):
        attn.zero_grad()
        x.grad = memory.grad = None
        y, weights = attn(x, memory, mask, need_weights=need_weights, distance=distance)
        assert (weights is not None) == need_weights
        (y * torch.linspace(-1, 1, 32)).sum().backward()
        outs.append(y.detach())
        grads.append(
            [x.grad.clone(), memory.grad.clone()] + [p.grad.clone() for p in attn.parameters()]
        )
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    for fused, spelled in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(fused, spelled, atol=1e-5, rtol=1e-4)


def test_attention_dropout_is_a_validated_config_field() -> None:
    assert ModelConfig(dropout=0.2).attention_dropout == 0.2  # default: the dropout
    assert ModelConfig(dropout=0.2, attention_dropout=0.0).attention_dropout == 0.0
    with pytest.raises(ValueError, match="attention_dropout"):
        ModelConfig(attention_dropout=1.0)
    model = build_model(ModelConfig(name="saint_plus", attention_dropout=0.5)).train()
    assert all(m.attn_drop.p == 0.5 for m in model.modules() if hasattr(m, "attn_drop"))


def test_lean_shape_has_one_attention_block_and_fewer_parameters() -> None:
    """The lean student: no encoder layers, no cross-attention, so one attention per decoder layer."""
    lean = build_model(variant_config("saint_plus_lean", d_model=16, n_layers=1, n_heads=2))
    full = build_model(
        config_for_spec("saint_plus", SPEC, VOCAB, d_model=16, n_layers=1, n_heads=2)
    )
    assert len(lean.encoder) == 0 and len(full.encoder) == 1
    assert all(layer.cross_attn is None for layer in lean.decoder)
    assert count_parameters(lean) < count_parameters(full)
    with pytest.raises(ValueError, match="encoder_layers must be null or an integer >= 0"):
        ModelConfig(encoder_layers=-1)
    assert ModelConfig(n_layers=3).n_encoder_layers == 3
    assert ModelConfig.from_dict(ModelConfig(encoder_layers=0).to_dict()).n_encoder_layers == 0


@pytest.mark.parametrize("variant", ["saint", "saint_plus", "saint_plus_lean"])
@pytest.mark.parametrize("decay", [True, False])
def test_forward_bundle_equals_forward_at_the_candidates(variant: str, decay: bool) -> None:
    """One bundle of N candidates after a history, scored by `item_side` then `forward_bundle` (the
    history once, each candidate over the history's keys and its own), equals `forward` on the whole row at the
    candidate positions: for a full window, a short history, an empty one, and B = 2 learners
    with different history lengths (padding keys must stay invisible)."""
    torch.manual_seed(0)
    cfg = variant_config(variant, d_model=16, n_layers=2, n_heads=2, ffn_mult=2, dropout=0.0)
    model = build_model(dataclasses.replace(cfg, attention_decay=decay))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.eval()
    rng = np.random.default_rng(7)
    cands = np.array([3, 5, 5, 9, 2, 11, 30])
    for lengths in ([40], [4], [0], [9, 2]):
        rows = [
            encode(
                random_history(rng, n) if n else History.empty(),
                SPEC,
                PARTS,
                candidates=cands,
                candidate_timestamp=10**10,
            )
            for n in lengths
        ]
        whole = logits_of(model, collate(rows))  # (B, T)
        h = [len(r["question"]) - len(cands) for r in rows]
        history = collate([{k: v[:n] for k, v in r.items()} for r, n in zip(rows, h, strict=True)])
        items = collate([{k: v[n:] for k, v in r.items()} for r, n in zip(rows, h, strict=True)])
        with torch.no_grad():
            item = to_torch({k: items[k] for k in ("question", "part", "tags")})
            embedding, difficulty = model.item_side(item["question"], item["part"], item["tags"])
            encoded = to_torch({k: items[k] for k in ENCODED_ITEM_INPUTS})
            got = model.forward_bundle(
                to_torch(history), {"embedding": embedding, "difficulty": difficulty, **encoded}
            )
        assert got.shape == (len(rows), len(cands))
        for b, n in enumerate(h):
            torch.testing.assert_close(got[b], whole[b, n : n + len(cands)], atol=1e-5, rtol=1e-5)


def test_mean_over_tags_ignores_tag_zero_whatever_its_row_holds() -> None:
    """The mean of a table's rows over each item's tags (0 = no tag) equals the masked mean, an
    item without tags gets zeros, and row 0 neither contributes nor receives a gradient."""
    torch.manual_seed(0)
    weight = torch.randn(6, 3, requires_grad=True)  # row 0 deliberately non-zero
    tags = torch.tensor([[[1, 4, 0], [0, 0, 0], [2, 2, 5]]])  # (B=1, T=3, M=3)
    got = mean_over_tags(weight, tags)  # (1, 3, 3)
    has = (tags > 0).unsqueeze(-1).float()
    want = (weight[tags] * has).sum(2) / has.sum(2).clamp(min=1.0)
    torch.testing.assert_close(got, want)
    assert torch.equal(got[0, 1], torch.zeros(3))
    got.sum().backward()
    assert weight.grad is not None and torch.equal(weight.grad[0], torch.zeros(3))
