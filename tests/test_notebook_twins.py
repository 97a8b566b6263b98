"""The notebook twins a grader reads: each model chapter holds its networks and fits one in plain view."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TWINS = Path(__file__).resolve().parents[1] / "ISTRATI_LUCIAN"
MODEL_NOTEBOOKS = ["02_cnn", "03_rnn", "04_fully_connected", "06_denoising_autoencoder", "07_transfer_learning"]
PLAIN_VIEW_CALLBACKS = {"EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"}


def parsed(name: str) -> ast.Module:
    return ast.parse((TWINS / f"{name}.py").read_text(encoding="utf-8"), filename=f"{name}.py")


def called_attributes(tree: ast.AST) -> set[str]:
    return {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}


def model_builders(tree: ast.Module) -> list[str]:
    """Functions of the notebook that construct a Keras model (keras.Model or keras.Sequential)."""
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and {"Model", "Sequential"} & called_attributes(node)
    ]


def test_every_model_notebook_is_checked():
    assert {path.stem for path in TWINS.glob("0*.py")} >= set(MODEL_NOTEBOOKS)


@pytest.mark.parametrize("name", MODEL_NOTEBOOKS)
def test_a_model_notebook_defines_its_networks_and_shows_their_layers(name):
    tree = parsed(name)
    builders = model_builders(tree)
    assert builders, f"{name}.py defines no Keras model: its networks must be written in the notebook"
    assert "summary" in called_attributes(tree), f"{name}.py shows no layer table (model.summary())"


@pytest.mark.parametrize("name", MODEL_NOTEBOOKS)
def test_a_model_notebook_compiles_and_fits_one_network_in_plain_view(name):
    tree = parsed(name)
    calls = called_attributes(tree)
    assert {"compile", "fit"} <= calls, f"{name}.py compiles or fits no network in plain view"
    named = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert PLAIN_VIEW_CALLBACKS <= named, f"{name}.py: callbacks not spelled out: {sorted(PLAIN_VIEW_CALLBACKS - named)}"


@pytest.mark.parametrize("name", sorted(path.stem for path in TWINS.glob("0*.py")))
def test_no_twin_imports_another_notebook(name):
    imported = set()
    for node in ast.walk(parsed(name)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {module for module in imported if module[:2].isdigit()}, f"{name}.py imports a notebook"
