"""The docs stay true to the code: the generated configuration reference is current, the tutorial's
code blocks are the tested package's code, links and code paths resolve, and every command line in
the docs parses with the real CLI parser."""

from __future__ import annotations

import dataclasses
import re
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.cli import build_parser, main
from lrpose_bench.commands.docs_reference import (
    DEFAULT_OUTPUT,
    EXTRA_SCHEMAS,
    check_reference,
    generate_reference,
    schema_fields,
    yaml_comments,
)
from lrpose_bench.config import BenchConfig, config_dir, flatten, read_yaml
from lrpose_bench.registry import METHODS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
PLUGIN = DOCS / "examples" / "softargmax_plugin"


@pytest.fixture(scope="module")
def reference() -> str:
    return generate_reference()


# ---------------------------------------------------------------- configuration reference
def test_configuration_reference_is_current():
    assert check_reference(ROOT / DEFAULT_OUTPUT), (
        "docs/configuration.md is stale: run 'lrpose-bench docs config --out docs/configuration.md'"
    )


def test_check_flag_fails_on_a_stale_file_and_write_fixes_it(tmp_path, capsys):
    target = tmp_path / "configuration.md"
    target.write_text(generate_reference().replace("`train.epochs`", "`train.epochz`"))
    assert main(["docs", "config", "--out", str(target), "--check"]) == 1
    captured = capsys.readouterr()
    assert "is stale" in captured.err and "train.epochz" in captured.out
    assert main(["docs", "config", "--out", str(target / "missing.md"), "--check"]) == 1
    assert main(["docs", "config", "--out", str(target)]) == 0
    assert main(["docs", "config", "--out", str(target), "--check"]) == 0
    assert target.read_text(encoding="utf-8") == generate_reference()
    capsys.readouterr()
    assert main(["docs", "config", "--check"]) == 2
    assert "--check needs --out FILE" in capsys.readouterr().err


def test_reference_documents_every_key_and_constant(reference):
    for dotted, _, _ in schema_fields(BenchConfig):
        assert f"| `{dotted}` |" in reference, dotted
    root = config_dir()
    for path in sorted((root / "methods").glob("*.yaml")):
        assert f"### `{path.stem}` — `configs/methods/{path.name}`" in reference
        section = reference.split(f"### `{path.stem}` — ", 1)[1].split("\n### ", 1)[0]
        data = read_yaml(path)
        for key in flatten(data.get("defaults") or {}):
            assert f"| `{key}` |" in section, (path.name, key)
        if path.stem in METHODS.names():
            for f in dataclasses.fields(METHODS.get(path.stem).Params):
                assert f"| `{f.name}` |" in section, (path.name, f.name)
        for res in data.get("per_resolution") or {}:
            assert (
                f" {res} |"
                in section.splitlines()[
                    section.splitlines().index(
                        next(line for line in section.splitlines() if line.startswith("| constant"))
                    )
                ]
            )


def test_reference_values_follow_the_yaml(reference):
    """A resolved per-resolution value and a defaults.yaml comment appear where they belong."""
    hrnet = read_yaml(config_dir() / "methods" / "hrnet.yaml")
    sigma_64 = hrnet["per_resolution"]["64x48"]["sigma"]
    row = next(line for line in reference.split("### `hrnet`", 1)[1].splitlines() if line.startswith("| `sigma` |"))
    assert f"`{sigma_64}`" in row.split("|")[4]  # columns: constant, type, default, 64x48, ...
    defaults_text = (config_dir() / "defaults.yaml").read_text()
    comment = defaults_text.split("box_padding:", 1)[1].split("#", 1)[1].splitlines()[0].strip()
    row = next(line for line in reference.splitlines() if line.startswith("| `data.box_padding` |"))
    assert comment in row


def test_extra_schemas_import():
    from lrpose_bench.commands.docs_reference import _load_schema

    for spec in EXTRA_SCHEMAS.values():
        assert dataclasses.is_dataclass(_load_schema(spec))


def test_yaml_comments_reader():
    text = textwrap.dedent(
        """\
        # Header line one.
        # Header line two.
        #
        # Second paragraph.
        notes: >
          folded text: with a colon
          key_like: inside the block
        defaults:
          sigma: 2.0        # width in px
          # above the radius
          radius: 3 # and beside it
          url: "a # not a comment"
        per_resolution:
          64x48: {sigma: 0.5}   # small
        """
    )
    parsed = yaml_comments(text)
    assert parsed.header == ["Header line one.", "Header line two.", "", "Second paragraph."]
    assert parsed.keys == {
        "defaults.sigma": "width in px",
        "defaults.radius": "above the radius and beside it",
        "per_resolution.64x48": "small",
    }
    assert yaml.safe_load(text)["defaults"]["url"] == "a # not a comment"


_NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda s: "k" + s)  # never a YAML bool
_TREES = st.recursive(
    st.integers(-5, 5) | st.booleans() | st.floats(-1e3, 1e3, allow_nan=False),
    lambda children: st.dictionaries(_NAMES, children, min_size=1, max_size=4),
    max_leaves=12,
)


def _emit(tree: dict, indent: int = 0, prefix: str = "") -> list[str]:
    lines = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.append(" " * indent + f"# about {dotted}")
            lines.append(" " * indent + f"{key}:")
            lines += _emit(value, indent + 2, dotted + ".")
        else:
            lines.append(" " * indent + f"{key}: {yaml.safe_dump(value).splitlines()[0]}  # is {dotted}")
    return lines


@settings(max_examples=60, deadline=None)
@given(tree=st.dictionaries(_NAMES, _TREES, min_size=1, max_size=4))
def test_yaml_comments_property(tree):
    """Every key of a generated nested YAML gets exactly its own comment, at its dotted path (the
    comment block before the first key is the file's header, as in every file of configs/)."""
    text = "# a header\nk0: 1\n" + "\n".join(_emit(tree)) + "\n"
    assert yaml.safe_load(text) == {"k0": 1, **tree}
    parsed = yaml_comments(text)
    assert parsed.header == ["a header"]
    expected = {}
    for dotted, value in _walk(tree):
        expected[dotted] = f"about {dotted}" if isinstance(value, dict) else f"is {dotted}"
    assert parsed.keys == expected


def _walk(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        yield f"{prefix}{key}", value
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}{key}.")


# --------------------------------------------------------------------------------- the docs
def test_docs_exist():
    names = {p.name for p in DOC_FILES}
    assert {
        "index.md",
        "architecture.md",
        "add-a-method.md",
        "configuration.md",
        "coco-setup.md",
        "reading-reports.md",
    } <= names


_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    for target in _LINK.findall(doc.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{doc.name}: broken link {target}"


_CODE_PATH = re.compile(r"`((?:lrpose_bench|baselines|methods|configs|tests)/[A-Za-z0-9_./<>-]+?)(?:::[A-Za-z_.]+)?`")


@pytest.mark.parametrize("doc", [p for p in DOC_FILES if p.name != "configuration.md"], ids=lambda p: p.name)
def test_code_paths_named_in_docs_exist(doc):
    for name in _CODE_PATH.findall(doc.read_text(encoding="utf-8")):
        if "<" in name or "*" in name:
            continue
        assert (ROOT / name).exists(), f"{doc.name} names {name}, which does not exist"


def _command_lines(text: str) -> list[str]:
    """Shell lines of fenced bash blocks that invoke lrpose-bench (directly, as a module or via torchrun)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if "lrpose-bench" in line.split("#", 1)[0] or "-m lrpose_bench" in line:
                lines.append(line)
    return lines


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_command_lines_parse(doc):
    """Every documented command parses with the real parser; lines marked '# planned' are the
    documented future interface and are skipped (see coco-setup.md)."""
    parser = build_parser()
    for line in _command_lines(doc.read_text(encoding="utf-8")):
        if line.endswith("# planned"):
            continue
        words = shlex.split(line, comments=True)
        if words[0] == "pip":
            continue
        if "-m" in words and words[words.index("-m") + 1] == "lrpose_bench":
            argv = words[words.index("-m") + 2 :]
        else:
            argv = words[words.index("lrpose-bench") + 1 :]
        try:
            parser.parse_args(argv)
        except SystemExit as error:  # argparse reports and exits
            pytest.fail(f"{doc.name}: {line!r} does not parse ({error})")


def test_multi_gpu_interface_is_documented_with_runnable_commands():
    """The torchrun and --gpus commands in coco-setup.md are real (they parse, see above)."""
    text = (DOCS / "coco-setup.md").read_text(encoding="utf-8")
    lines = _command_lines(text)
    assert any("torchrun" in line and "-m lrpose_bench run" in line for line in lines)
    assert any("--gpus" in line for line in lines)
    assert not any(line.endswith("# planned") for line in lines)


def test_reference_shortcut_options_exist(reference):
    """The options the reference calls shortcuts for keys are options of 'run'."""
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    known = {s for action in run._actions for s in action.option_strings}
    intro = reference.split("## Run settings", 1)[0]
    for option in re.findall(r"`(--[a-z-]+)", intro):
        assert option in known, option


def test_architecture_layout_names_every_module():
    """docs/architecture.md's Layout block is the map of the package: every module of lrpose_bench/
    is named in it (a module added without a line there fails here)."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "lrpose_bench"
    modules = [p for p in package.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"}]
    assert modules
    missing = sorted(str(p.relative_to(package)) for p in modules if p.name not in layout)
    assert not missing, f"docs/architecture.md Layout does not name: {missing}"


# ------------------------------------------------------------------------------ the tutorial
def test_tutorial_code_is_the_tested_package():
    """Each python/toml block of add-a-method.md is copied verbatim from the package the tests run."""
    text = (DOCS / "add-a-method.md").read_text(encoding="utf-8")
    module = (PLUGIN / "lrpose_softargmax.py").read_text(encoding="utf-8")
    pyproject = (PLUGIN / "pyproject.toml").read_text(encoding="utf-8")
    python_blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    toml_blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(python_blocks) >= 5 and toml_blocks
    for block in python_blocks:
        assert block.strip() in module, block[:200]
    for block in toml_blocks:
        assert block.strip() in pyproject, block[:200]
    assert (
        'softargmax = "lrpose_softargmax"' in pyproject and '[project.entry-points."lrpose_bench.methods"]' in pyproject
    )
