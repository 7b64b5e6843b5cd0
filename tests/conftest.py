"""Shared pytest fixtures (no network, no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: Vocabulary of the tiny test tokenizer (lower-case words; anything else becomes [UNK]).
TINY_BERT_WORDS = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . , the a of in and with no is are was were "
    "nuclei evenly distributed dense sparse irregularly large small cells cell tissue "
    "lesion lesions left right upper middle lower lung lungs bilateral pulmonary infection infected "
    "area areas one two three all zone zones "
    "computerized tomography liver kidney pancreas colon tumor cyst cancer"
).split()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with a tiny random BERT (hidden 32, 2 layers, 2 heads, 64 positions) and a real WordPiece tokenizer.

    Written with ``save_pretrained`` (config.json, model.safetensors, tokenizer files), i.e. the layout
    :class:`common.text.encoder.FrozenTextEncoder` loads offline. Deterministic weights (seed 0). Read-only by
    convention: tests must not write into it.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab_dir = tmp_path_factory.mktemp("tiny_bert_vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(TINY_BERT_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir))  # reads vocab.txt (works in transformers 4 and 5)
    config = BertConfig(
        vocab_size=len(TINY_BERT_WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = BertModel(config)
    torch.random.set_rng_state(rng_state)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def demo_datalists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic MoNuSeg / MSD / BUSI datasets converted by the real converters; ``{name: datalist.json}``."""
    from common.data.converters import get_converter
    from common.data.synthetic import make_monuseg_like, make_msd_like
    from common.data.synthetic_busi import make_busi_like

    data = tmp_path_factory.mktemp("demo_data")
    raw = data / "raw"
    make_monuseg_like(raw / "monuseg", n_train=4, n_test=2, size=64, seed=0)
    make_msd_like(raw / "msd", n_train=4, n_test=1, shape_range=(32, 34), seed=0)
    make_busi_like(raw / "busi", n_benign=1, n_malignant=6, n_normal=1, size=(64, 64), seed=0)
    names = ("monuseg", "msd", "busi")
    return {name: Path(get_converter(name).convert(raw / name, data / name, seed=0)) for name in names}


#: opt-in marker -> (command-line flag, environment variable, why it is opt-in)
OPT_IN = {
    "monailabel": ("--run-monailabel", "RUN_MONAILABEL", "starts a real MONAI Label server"),
    "paper_scale": (
        "--run-paper-scale",
        "RUN_PAPER_SCALE",
        "runs every shipped paper-scale config at the papers' sizes on CPU (hours; ~8 GB of stand-ins)",
    ),
    "zoo_ci": (
        "--run-zoo-ci",
        "RUN_ZOO_CI",
        "runs the model zoo's own CI scripts on the four packages (needs ZOO_REPO, ZOO_HOOKS and the zoo runner's "
        "Python 3.10 venv from tools/setup_zoo_ci_env.sh; ~15 min)",
    ),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-monailabel",
        action="store_true",
        default=False,
        help="also run the tests marked `monailabel`: a real MONAI Label server on 127.0.0.1 serving every bundle "
        "(needs MONAI Label's own venv: bash tools/setup_monailabel_env.sh; a few minutes)",
    )
    parser.addoption(
        "--run-paper-scale",
        action="store_true",
        default=False,
        help="also run the tests marked `paper_scale`: tools/paper_scale_check.py on every bundle x dataset with "
        "full-size stand-in weights (PAPER_SCALE_STANDINS, default /tmp/diffseg_standins; hours on 2 cores)",
    )
    parser.addoption(
        "--run-zoo-ci",
        action="store_true",
        default=False,
        help="also run the tests marked `zoo_ci`: tools/zoo_ci_check.py, the model zoo's own CI on the packages "
        "(ZOO_REPO = a model-zoo checkout or git dir, ZOO_HOOKS = a pre-commit-hooks one, ZOO_PYTHON = the runner)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import os

    for marker, (flag, env, why) in OPT_IN.items():
        if config.getoption(flag) or os.environ.get(env) == "1":
            continue
        skip = pytest.mark.skip(reason=f"opt-in: pass {flag} (or {env}=1); it {why}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
