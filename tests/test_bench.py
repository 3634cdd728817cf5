"""Smoke tests of ``python -m reference_models.bench`` and its measurement helpers.

Every section runs once on tiny models or tiny sizes with one repeat; the tests check the
command line, the printed columns and the JSON rows. No measured time is asserted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from reference_models import bench, build_model
from reference_models.bench import cli, coparser, flops, latency, measure, report
from reference_models.devices import resolve_device

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--repeats", "1", "--warmup", "0"]


def _header_and_table(out: str, section: str) -> tuple[str, list[str]]:
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"# {section} | "), lines[0]
    assert f"torch {torch.__version__}" in lines[0]
    assert f"{torch.get_num_threads()} threads" in lines[0]
    return lines[0], lines[1:]


def _row_line(lines: list[str], first: str) -> list[str]:
    matches = [line.split() for line in lines if line.split()[:1] == [first]]
    assert len(matches) == 1, (first, lines)
    return matches[0]


def test_parser_sections_and_options():
    parser = cli._parser()
    args = parser.parse_args(["latency"])
    assert (args.size, args.device, args.dtype, args.repeats, args.warmup) == ("base", "cpu", "float32", 5, 1)
    assert not args.channels_last and not args.compile and args.memory
    args = parser.parse_args(
        ["latency", "--models", "a", "b", "--size", "tiny", "--dtype", "bf16", "--channels-last", "--compile",
         "--repeats", "3", "--threads", "1", "--no-memory", "--json", "x.json"]
    )
    assert args.models == ["a", "b"] and args.size == "tiny" and args.dtype == "bf16"
    assert args.channels_last and args.compile and args.repeats == 3 and args.threads == 1 and not args.memory
    assert args.json == Path("x.json")
    args = parser.parse_args(["layers", "--quick", "--only", "CASGDecoder", "--coparser-sizes"])
    assert args.quick and args.only == ["CASGDecoder"] and args.coparser_sizes == [] and args.batch == 1
    args = parser.parse_args(["train"])
    assert (args.batch, args.steps, args.models, args.image_size) == (32, 3, None, None)
    for wrong in (["latency", "--dtype", "fp16"], ["latency", "--size", "huge"], ["speed"], [], ["flops", "--quick"]):
        with pytest.raises(SystemExit):
            parser.parse_args(wrong)


def test_default_model_lists():
    assert bench.latency_models("tiny") == [f"{s}_tiny" for s in bench.LATENCY_SYSTEMS]
    assert bench.latency_models("base")[-1] == "s2rm_swint"
    names = bench.train_models()
    assert names[0] == "lavt_sadlr_tiny" and len(names) == len(set(names))
    assert all(name.endswith("_tiny") for name in names)


def test_latency_groups_add_baseline_and_skip_unknown():
    groups, skipped = latency._latency_groups(["vlt_sadlr_tiny", "asda_tiny", "nope_tiny", "lts_tiny", "lts_sadlr_tiny"],
                                              {"vlt_tiny", "vlt_sadlr_tiny", "asda_tiny", "lts_tiny", "lts_sadlr_tiny"})
    assert groups == [["vlt_tiny", "vlt_sadlr_tiny"], ["asda_tiny"], ["lts_tiny", "lts_sadlr_tiny"]]
    assert skipped == ["nope_tiny"]


def test_latency_section_pairs_plugin_with_baseline(tmp_path, capsys):
    path = tmp_path / "latency.json"
    assert bench.main(["latency", "--models", "lavt_sadlr_tiny", "not_a_model_tiny", "--channels-last", *FAST, "--json", str(path)]) == 0
    header, lines = _header_and_table(capsys.readouterr().out, "latency")
    assert "device cpu" in header and "float32" in header
    assert lines[0].split()[:2] == ["model", "input"] and "vs baseline" in lines[0] and "peak MiB" in lines[0]
    base, plugin = _row_line(lines, "lavt_tiny"), _row_line(lines, "lavt_sadlr_tiny")
    assert base[1] == plugin[1] == "64"
    assert base[6] == "-" and float(plugin[6]) > 0 and float(plugin[7]) > 0
    assert any("not_a_model_tiny" in line for line in lines)
    saved = json.loads(path.read_text())
    assert saved["section"] == "latency" and saved["environment"]["torch"] == torch.__version__
    assert saved["skipped"] == ["not_a_model_tiny"] and saved["channels_last"] is True
    rows = {row["model"]: row for row in saved["rows"]}
    assert set(rows) == {"lavt_tiny", "lavt_sadlr_tiny"}
    assert rows["lavt_sadlr_tiny"]["baseline"] == "lavt_tiny" and rows["lavt_tiny"]["baseline"] is None
    assert len(rows["lavt_tiny"]["times_ms"]) == 1 and rows["lavt_tiny"]["peak_mib"] >= 0


def test_layers_section_quick(tmp_path, capsys):
    path = tmp_path / "layers.json"
    argv = ["layers", "--quick", "--only", "DynamicQueryRefiner", "SpatialRecurrentCoparser", *FAST,
            "--coparser-sizes", "4", "--coparser-dims", "8", "--json", str(path)]
    assert bench.main(argv) == 0
    _, lines = _header_and_table(capsys.readouterr().out, "layers")
    titles = next(line for line in lines if line.startswith("layer "))
    for column in ("setting", "params(M)", "fwd ms", "f+b ms", "pk fwd MiB", "pk f+b MiB"):
        assert column in titles
    assert sum(line.startswith("SpatialRecurrentCoparser") for line in lines) == 2
    assert any(line.split()[:3] == ["coparse", "4", "8"] for line in lines)
    assert any(line.split()[:3] == ["layer", "4", "8"] for line in lines)
    rows = json.loads(path.read_text())["rows"]
    assert [r["layer"] for r in rows[:3]] == ["DynamicQueryRefiner", "SpatialRecurrentCoparser", "SpatialRecurrentCoparser"]
    assert all(r["peak_fb_mib"] >= 0 and r["params_m"] > 0 for r in rows[:3])
    comparison = [r for r in rows if r["layer"].endswith("gemm vs shift")]
    assert [(r["part"], r["size"], r["dim"], r["batch"]) for r in comparison] == [("coparse", 4, 8, 2), ("layer", 4, 8, 2)]


def test_layers_section_bf16_without_memory_or_comparison(capsys):
    assert bench.main(["layers", "--quick", "--only", "LanguageGate", "--dtype", "bf16", "--no-memory", "--coparser-sizes", *FAST]) == 0
    header, lines = _header_and_table(capsys.readouterr().out, "layers")
    assert "bf16" in header
    row = _row_line(lines, "LanguageGate")
    assert row[-2:] == ["-", "-"]
    assert not any("gemm vs shift" in line for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layers", "--quick", "--only", "Nope"], "--only: unknown layer\\(s\\) Nope; known: "),
        (["flops", "--models", "lts_tny"], "unknown model 'lts_tny' \\(did you mean 'lts_tiny'\\?\\)"),
        (["train", "--models", "lavt_tiny", "nope"], "unknown model 'nope'"),
        (["flops", "--models", "lts_tiny", "--model-arg", "imagesize=32"], "--model-arg: unknown config key 'imagesize'"),
        (["flops", "--models", "lts_tiny", "--model-arg", "swin_window=0"], "swin_window: expected an integer from 1 to 1024; got 0"),
        (["flops", "--models", "lavt_sadlr_tiny", "--model-arg", "refiner_iters=2"], "loss_weights: expected one weight per refiner iteration"),
        (["latency", "--device", "gpu"], "--device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'gpu'"),
        (["flops", "--threads", "0"], "--threads: expected a positive integer; got 0"),
    ],
)
def test_argument_errors_come_before_any_output(argv, message, capsys):
    with pytest.raises(ValueError, match=message):
        bench.main(argv)
    assert capsys.readouterr().out == ""


def test_every_layer_case_builds_and_runs_quick():
    # Each quick case goes through forward and backward once (the table's own code path).
    rows = bench.layers_table(bench.layer_cases(quick=True), repeats=1, warmup=0, memory=False)
    layers = {row["layer"] for row in rows}
    assert {"DynamicQueryRefiner", "PixelWordAttention", "AdaptiveLayerSelector", "ScaleWiseAggregator",
            "DualBranchAligner", "SpatialRecurrentCoparser", "CASGDecoder", "LanguageGate"} <= layers
    assert len(bench.layer_cases(quick=False)) == len(bench.layer_cases(quick=True)) + 3  # 4 PWAM stages


def test_train_section_tiny(tmp_path, capsys):
    path = tmp_path / "train.json"
    assert bench.main(["train", "--models", "lavt_sadlr_tiny", "--batch", "2", "--steps", "1", "--warmup", "0", "--json", str(path)]) == 0
    _, lines = _header_and_table(capsys.readouterr().out, "train")
    for column in ("model", "batch", "optimizer", "step ms", "samples/s", "data/s", "peak MiB"):
        assert column in lines[0]
    row = _row_line(lines, "lavt_sadlr_tiny")
    assert row[1:4] == ["64", "2", "adamw"]
    saved = json.loads(path.read_text())
    assert saved["section"] == "train" and saved["steps"] == 1
    (only,) = saved["rows"]
    assert only["model"] == "lavt_sadlr_tiny" and only["batch"] == 2 and only["samples_per_s"] > 0


def test_flops_section_tiny(tmp_path, capsys):
    path = tmp_path / "flops.json"
    assert bench.main(["flops", "--models", "lts_tiny", "lts_sadlr_tiny", "--json", str(path)]) == 0
    _, lines = _header_and_table(capsys.readouterr().out, "flops")
    assert lines[0].split()[:3] == ["model", "input", "GMACs"]
    rows = json.loads(path.read_text())["rows"]
    assert [r["model"] for r in rows] == ["lts_tiny", "lts_sadlr_tiny"]
    assert rows[1]["sadlr_ratio"] == pytest.approx(rows[1]["gmacs"] / rows[0]["gmacs"], abs=1e-3)
    for row in rows:
        assert sum(row["parts"].values()) == pytest.approx(row["gmacs"], rel=1e-3)
    # Tiny models cost thousandths of a G: the table must not round them to zero.
    assert float(_row_line(lines, "lts_tiny")[2]) == pytest.approx(rows[0]["gmacs"], rel=0.01)


def test_flops_parts_split_the_total_by_child_module(capsys):
    model = build_model("s2rm_tiny")
    size, words = model.config.image_size, model.config.text.max_words
    parts = bench.macs_by_part(model, size, words)
    assert list(parts) == ["text_encoder", "backbone", "coparser", "decoder"]
    assert all(value > 0 for value in parts.values())
    assert sum(parts.values()) == pytest.approx(bench.count_macs(model, size, words), rel=1e-9)
    # The text encoder's share is what the text encoder alone costs on the same words.
    ids = torch.randint(1, 1000, (1, words))
    with flops.counting() as counter, torch.no_grad():
        model.eval().text_encoder(ids, torch.ones_like(ids))
    assert parts["text_encoder"] == pytest.approx(counter.get_total_flops() / 2e9, rel=1e-9)
    assert bench.main(["flops", "--models", "s2rm_tiny", "--parts"]) == 0
    out = capsys.readouterr().out
    assert "GMACs by part" in out and "s2rm_tiny  text_encoder" in out


def test_interleaved_rounds_alternate_order():
    calls = []
    times = measure.interleaved_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, repeats=4)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert {name: len(values) for name, values in times.items()} == {"a": 4, "b": 4}


def test_peak_bytes_counts_what_the_step_allocates():
    kept = []
    peak = measure.peak_bytes(lambda: kept.append(torch.ones(1 << 20)))  # 4 MiB of float32
    assert 4 * measure.MIB <= peak < 8 * measure.MIB
    assert measure.peak_bytes(lambda: None) == 0


def test_total_sums_nested_outputs_with_gradients():
    x = torch.ones(3, requires_grad=True)
    loss = measure.total({"a": [x * 2, (x * 3, torch.ones(2))], "b": torch.arange(3)})
    loss.backward()
    assert loss.item() == 15 and x.grad.tolist() == [5.0, 5.0, 5.0]


def test_environment_and_devices():
    env = report.environment("cpu", "bf16")
    line = report.format_environment("demo", env)
    assert line.startswith("# demo | ") and "device cpu" in line and "bf16" in line and env["torch"] in line
    with pytest.raises(ValueError, match="device"):
        resolve_device("meta")


def test_coparser_targets_read_the_key_rows():
    def row(part, x):
        return {"part": part, "size": 16, "dim": 768, "batch": 8, "x_fwd": x, "x_fb": x, "x_mem_fwd": x, "x_mem_fb": x}

    assert coparser.coparser_targets([row("coparse", 1.0)]) is None
    checks = dict(coparser.coparser_targets([row("coparse", 3.5), row("layer", 0.9)]))
    assert checks["coparse fwd >= 3x faster"] and checks["coparse peak fwd+bwd >= 2x smaller"]
    assert not checks["layer fwd faster"]


def test_benchmarks_coparser_script_runs(capsys):
    spec = importlib.util.spec_from_file_location("coparser_benchmark", ROOT / "benchmarks" / "coparser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--sizes", "4", "--dims", "8", "--batch", "2", "--words", "4", "--text-dim", "8", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("machine: ") and "fwd gemm" in lines[4]
    assert [line.split()[:3] for line in lines[6:8]] == [["coparse", "4", "8"], ["layer", "4", "8"]]


def test_flops_model_arg_changes_every_model(tmp_path, capsys):
    path = tmp_path / "flops.json"
    assert bench.main(["flops", "--models", "lts_tiny", "--json", str(path)]) == 0
    plain = json.loads(path.read_text())["rows"][0]
    assert bench.main(["flops", "--models", "lts_tiny", "--model-arg", "decoder_dim=64", "--json", str(path), "--overwrite"]) == 0
    saved = json.loads(path.read_text())
    assert "config changed in every model: decoder_dim=64" in capsys.readouterr().out
    assert saved["model_args"] == ["decoder_dim=64"]
    assert saved["rows"][0]["gmacs"] > plain["gmacs"]
    with pytest.raises(ValueError, match="--model-arg: expected KEY=VALUE; got 'decoder_dim'"):
        bench.main(["flops", "--models", "lts_tiny", "--model-arg", "decoder_dim"])


@pytest.mark.parametrize("backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])
def test_flops_count_every_attention_kernel(backend):
    # On CPU, FLASH_ATTENTION is the fused CPU kernel (torch 2.14 has no formula for it);
    # MATH runs the two products as bmm. Both must give the closed form.
    b, h, s_q, s_k, e = 2, 3, 40, 24, 16
    q = torch.randn(b, h, s_q, e, requires_grad=True)
    k, v = (torch.randn(b, h, s_k, e, requires_grad=True) for _ in range(2))
    with sdpa_kernel(backend), flops.counting() as counter:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() / 2 == b * h * (s_q * s_k * e + s_q * s_k * e)  # q @ k^T, then attn @ v
    if backend == SDPBackend.FLASH_ATTENTION:
        with sdpa_kernel(backend), flops.counting() as counter:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            out.sum().backward()
        # forward, then backward: scores recomputed, two products for the value, two for q and k
        assert counter.get_total_flops() / 2 == b * h * s_q * s_k * (2 * e + 5 * e)


def test_flops_count_multihead_attention():
    n, dim = 50, 32
    module = torch.nn.MultiheadAttention(dim, num_heads=4, batch_first=True).eval()
    x = torch.randn(1, n, dim)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), flops.counting() as counter, torch.no_grad():
        module(x, x, x, need_weights=False)
    # q, k, v and output projections, then q @ k^T and attn @ v summed over the heads
    assert counter.get_total_flops() / 2 == 4 * n * dim * dim + 2 * n * n * dim
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on afterwards


def test_flops_experiment_pairs_each_sadlr_row_with_its_baseline(tmp_path, capsys):
    path = tmp_path / "flops.json"
    argv = ["flops", "--experiment", "sadlr/table3/lts", "--experiment", "sadlr/table3/lts-s", "--size", "tiny", "--json", str(path)]
    assert bench.main(argv) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["model"] for r in rows] == ["lts_tiny", "lts_sadlr_tiny"]
    assert "sadlr_ratio" not in rows[0]
    assert rows[1]["sadlr_ratio"] == pytest.approx(rows[1]["gmacs"] / rows[0]["gmacs"], abs=1e-3)
    # the paper's own ratio whatever size ours ran at: LTS + S 139.4 G over LTS 133.3 G
    assert rows[1]["paper_sadlr_ratio"] == pytest.approx(139.4 / 133.3, abs=1e-3)
    header = capsys.readouterr().out.splitlines()
    assert any("SADLR ratio" in line for line in header)


@pytest.mark.parametrize("baseline", ["lts", "vlt", "lavt"])
def test_sadlr_table3_base_ratios_match_the_paper(baseline):
    # SADLR Table 3 gives each baseline's FLOPs beside "+ S": what the plug-in costs. One
    # baseline a test (each counts two base-size models).
    from reference_models.bench.flops import experiment_flops_table
    from reference_models.experiments import select_experiments

    chosen = [e for e in select_experiments(["sadlr/table3"]) if e.available and e.model in (baseline, f"{baseline}_sadlr")]
    assert len(chosen) == 2
    rows = experiment_flops_table(chosen, progress=False)
    paired = [r for r in rows if "sadlr_ratio" in r]
    assert [r["model"] for r in paired] == [f"{baseline}_sadlr_base"]
    for row in paired:
        assert abs(row["sadlr_ratio"] - row["paper_sadlr_ratio"]) <= 0.02, row
