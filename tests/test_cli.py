import json

from helpers import run_cli


def test_version_lists_libraries():
    code, out, _ = run_cli(["--version"])
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names[:2] == ["halitool", "python"] and {"torch", "cuda", "h5py", "hdf5", "scikit-learn"} <= set(names)


def test_short_help_and_examples():
    code, out, _ = run_cli(["-h"])
    assert code == 0 and "Examples:" in out


def test_unknown_command_is_usage_error():
    code, _, err = run_cli(["no-such-command"])
    assert code == 2 and "Error:" in err


def test_data_info_json(mnist_dir):
    code, out, err = run_cli(["data", "info", f"mnist:{mnist_dir}", "--format", "json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == 1 and doc["command"] == "data info"
    assert doc["splits"] == {"train": 200, "valid": 0, "test": 50}
    assert doc["image_shape"] == [1, 28, 28]


def test_truncated_idx_exit_3_one_line(mnist_dir):
    path = mnist_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    code, out, err = run_cli(["data", "info", f"mnist:{mnist_dir}"])
    assert code == 3 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and "train-images-idx3-ubyte" in lines[0]
    assert "truncated" in lines[0]


def test_env_var_sets_option(mnist_dir, monkeypatch):
    monkeypatch.setenv("HALITOOL_DATA_INFO_FORMAT", "json")
    code, out, _ = run_cli(["data", "info", f"mnist:{mnist_dir}"])
    assert code == 0 and json.loads(out)["kind"] == "mnist"
