"""T2M evaluator: word table, architecture, safe loading, save/load round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvqfast.eval import evaluator as E
from rvqfast.eval import words as W


# Tiny recurrent / conv steps: extra threads only add contention on the shared cores.
pytestmark = pytest.mark.usefixtures("one_thread")

TINY = E.PRESETS["tiny"]


def _tiny_evaluator(seed=0, dim_word=300):
    torch.manual_seed(seed)
    table = W.random_word_vectors(["person", "walk", "forward", "jump"], dim_word, seed=seed)
    cfg = E.EvaluatorConfig(**{**TINY.__dict__, "dim_word": dim_word})
    return E.T2MEvaluator(cfg, table, np.zeros(263, np.float32), np.ones(263, np.float32),
                          provenance={"kind": "test"}).eval()


def test_parse_caption_formats():
    line = "a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0"
    assert W.parse_caption(line) == [("a", "DET"), ("person", "NOUN"), ("walk", "VERB"), ("forward", "ADV")]
    assert W.parse_caption("a/DET man/NOUN") == [("a", "DET"), ("man", "NOUN")]
    assert W.parse_caption("A man jumps, twice.") == [("a", "OTHER"), ("man", "OTHER"),
                                                      ("jumps", "OTHER"), ("twice", "OTHER")]


def test_pos_category_vip_overrides_tag():
    assert W.POS_CATEGORIES[W.pos_category("forward", "ADV")] == "Loc_VIP"
    assert W.POS_CATEGORIES[W.pos_category("knee", "NOUN")] == "Body_VIP"
    assert W.POS_CATEGORIES[W.pos_category("walk", "VERB")] == "Act_VIP"
    assert W.POS_CATEGORIES[W.pos_category("person", "NOUN")] == "NOUN"
    assert W.POS_CATEGORIES[W.pos_category("person", "XYZ")] == "OTHER"
    assert W.NUM_POS == 15


def test_encode_sentences_framing_and_unknowns():
    table = W.random_word_vectors(["person", "walk"], 8)
    w, p, n = W.encode_sentences(table, ["a/DET person/NOUN walk/VERB"], max_text_len=5)
    assert w.shape == (1, 7, 8) and p.shape == (1, 7, 15)
    assert n.tolist() == [5]  # sos a person walk eos
    other = W.POS_CATEGORIES.index("OTHER")
    assert torch.equal(w[0, 0], torch.from_numpy(table.vector("sos")))
    assert torch.equal(w[0, 1], torch.from_numpy(table.vector("unk")))  # "a" not in table
    assert p[0, 1].argmax() == other
    assert p[0, 2].argmax() == W.POS_CATEGORIES.index("NOUN")
    assert p[0, 3].argmax() == W.POS_CATEGORIES.index("Act_VIP")
    assert torch.equal(w[0, 4], torch.from_numpy(table.vector("eos")))
    assert torch.equal(w[0, 6], torch.from_numpy(table.vector("unk")))  # padding
    long = " ".join(["person/NOUN"] * 30)
    assert W.encode_sentences(table, [long], max_text_len=5)[2].tolist() == [7]


def test_word_vectors_safe_load(tmp_path):
    words = ["sos", "eos", "unk", "hello"]
    np.save(tmp_path / "v.npy", np.arange(8, dtype=np.float32).reshape(4, 2))
    (tmp_path / "v.txt").write_text("\n".join(words) + "\n")
    (tmp_path / "v.json").write_text(json.dumps(words))
    t = W.WordVectors.load(tmp_path / "v.npy", tmp_path / "v.txt")
    assert t.vector("hello").tolist() == [6.0, 7.0]
    assert W.WordVectors.load(tmp_path / "v.npy", tmp_path / "v.json").words == words
    (tmp_path / "v.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match="pickle"):
        W.WordVectors.load(tmp_path / "v.npy", tmp_path / "v.pkl")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="vectors_path"):
        W.WordVectors.load(tmp_path / "obj.npy", tmp_path / "v.txt")
    (tmp_path / "short.txt").write_text("sos\neos\n")
    with pytest.raises(ValueError, match="vocab_path"):
        W.WordVectors.load(tmp_path / "v.npy", tmp_path / "short.txt")


def test_architecture_shapes_and_length_masking():
    ev = _tiny_evaluator()
    x = torch.randn(3, 40, 263)
    lens = torch.tensor([40, 24, 8])
    m = ev.encode_motion(x, lens)
    assert m.shape == (3, 32)
    # Frames beyond a sequence's length must not change its embedding.
    x2 = x.clone()
    x2[1, 24:] = 100.0
    assert torch.allclose(ev.encode_motion(x2, lens)[1], m[1], atol=1e-5)
    # The 4 foot-contact dims are not seen by the movement encoder.
    x3 = x.clone()
    x3[..., 259:] += 5.0
    assert torch.allclose(ev.encode_motion(x3, lens), m, atol=1e-5)
    t = ev.encode_text(["a/DET person/NOUN walk/VERB", "jump/VERB"])
    assert t.shape == (2, 32)
    with pytest.raises(ValueError, match="lengths"):
        ev.encode_motion(x, torch.tensor([44, 8, 8]))
    with pytest.raises(ValueError, match="features"):
        ev.encode_motion(torch.randn(2, 8, 262))


def test_official_key_names_match_published_layout():
    ev = E.T2MEvaluator(E.EvaluatorConfig(), W.random_word_vectors([], 300),
                        np.zeros(263), np.ones(263))
    mov = ev.movement_encoder.state_dict()
    assert mov["main.0.weight"].shape == (512, 259, 4) and mov["main.3.weight"].shape == (512, 512, 4)
    assert mov["out_net.weight"].shape == (512, 512)
    mot = ev.motion_encoder.state_dict()
    assert mot["hidden"].shape == (2, 1, 1024) and mot["gru.weight_ih_l0_reverse"].shape == (3072, 1024)
    assert mot["output_net.3.weight"].shape == (512, 1024)
    txt = ev.text_encoder.state_dict()
    assert txt["pos_emb.weight"].shape == (300, 15) and txt["input_emb.weight"].shape == (512, 300)


class _Evil:
    """Any non-allow-listed object makes weights_only loading refuse the file."""


def _fake_official(tmp_path, ev, extra=None, drop=None):
    ck = tmp_path / "t2m"
    (ck / "text_mot_match" / "model").mkdir(parents=True)
    (ck / "Comp_v6_KLD01" / "meta").mkdir(parents=True)
    state = {p: getattr(ev, p).state_dict() for p in ("movement_encoder", "motion_encoder", "text_encoder")}
    state["epoch"] = 3
    if drop:
        state["text_encoder"] = {k: v for k, v in state["text_encoder"].items() if k != drop}
    if extra:
        state.update(extra)
    torch.save(state, ck / "text_mot_match" / "model" / "finest.tar")
    np.save(ck / "Comp_v6_KLD01" / "meta" / "mean.npy", np.zeros(263, np.float32))
    np.save(ck / "Comp_v6_KLD01" / "meta" / "std.npy", np.ones(263, np.float32))
    g = tmp_path / "glove"
    g.mkdir()
    np.save(g / "our_vab_data.npy", ev.words.vectors)
    return ck, g


def test_load_official_roundtrip_and_refusals(tmp_path):
    ev = E.T2MEvaluator(E.EvaluatorConfig(), W.random_word_vectors(["walk"], 300), np.zeros(263),
                        np.ones(263)).eval()
    ck, g = _fake_official(tmp_path, ev)
    (g / "our_vab_words.pkl").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle"):
        E.load_official(ck, g)
    (g / "our_vab_words.txt").write_text("\n".join(ev.words.words) + "\n")
    got = E.load_official(ck, g)
    assert got.provenance["kind"] == "official" and len(got.provenance["checkpoint_sha256"]) == 64
    x = torch.randn(2, 16, 263)
    assert torch.allclose(got.encode_motion(x), ev.encode_motion(x), atol=1e-5)
    cap = ["a/DET person/NOUN walk/VERB"]
    assert torch.allclose(got.encode_text(cap), ev.encode_text(cap), atol=1e-5)
    (ck / "Comp_v6_KLD01" / "meta" / "std.npy").unlink()
    with pytest.raises(FileNotFoundError, match="std.npy"):
        E.load_official(ck, g)


def test_load_official_rejects_wrong_keys_and_unsafe_pickles(tmp_path):
    ev = E.T2MEvaluator(E.EvaluatorConfig(), W.random_word_vectors([], 300), np.zeros(263), np.ones(263))
    ck, g = _fake_official(tmp_path / "a", ev, drop="pos_emb.weight")
    (g / "our_vab_words.txt").write_text("\n".join(ev.words.words) + "\n")
    with pytest.raises(ValueError, match="pos_emb.weight"):
        E.load_official(ck, g)
    ck2, g2 = _fake_official(tmp_path / "b", ev, extra={"opt": _Evil()})
    (g2 / "our_vab_words.txt").write_text("\n".join(ev.words.words) + "\n")
    with pytest.raises(ValueError, match="weights_only"):
        E.load_official(ck2, g2)


def test_save_load_roundtrip(tmp_path):
    ev = _tiny_evaluator()
    E.save_evaluator(ev, tmp_path / "ev")
    assert not list((tmp_path / "ev").glob("*.tmp"))
    got = E.load_evaluator(tmp_path / "ev")
    x = torch.randn(2, 16, 263)
    assert torch.allclose(got.encode_motion(x), ev.encode_motion(x))
    assert got.provenance["kind"] == "test" and len(got.provenance["weights_sha256"]) == 64
    meta = json.loads((tmp_path / "ev" / "evaluator.json").read_text())
    meta["config"]["dim_motion_hidden"] = 64
    (tmp_path / "ev" / "evaluator.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="shape"):
        E.load_evaluator(tmp_path / "ev")
