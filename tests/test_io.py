"""Bad input: one line on stderr naming file/line/field, exit 2, nothing written."""

import shutil

import pytest

from cl_toolkit.data import load_images
from cl_toolkit.io import InputError, atomic_dir, read_jsonl


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_jsonl_validates(tmp_path):
    p = _write(tmp_path / "r.jsonl", ['{"id": "a", "text": "x"}', "", '{"id": 7, "text": "y"}'])
    recs = read_jsonl(p)
    assert [r["id"] for r in recs] == ["a", "7"] and recs[1]["_line"] == 3


@pytest.mark.parametrize("lines, needle", [
    (['{"id": "a"}', '{"id": "b"'], "r.jsonl:2: malformed JSON"),
    (['{"id": "a"}', '["b"]'], "r.jsonl:2: expected a JSON object"),
    (['{"id": "a"}', '{"text": "b"}'], "r.jsonl:2: field 'id': missing"),
    (['{"id": "a"}', '{"id": "a"}'], "r.jsonl:2: field 'id': duplicate id 'a' (first on line 1)"),
    ([], "r.jsonl: no records (empty data set)"),
])
def test_read_jsonl_errors(tmp_path, lines, needle):
    p = _write(tmp_path / "r.jsonl", lines)
    with pytest.raises(InputError) as e:
        read_jsonl(p)
    assert needle in str(e.value)


def test_image_records_errors(tmp_path, samples):
    img = next((samples / "fashion" / "bag").iterdir())
    shutil.copy(img, tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    p = _write(tmp_path / "a.jsonl", ['{"id": "1", "image": "ok.png"}', '{"id": "2"}'])
    with pytest.raises(InputError, match=r"a.jsonl:2: field 'image': missing"):
        load_images(str(p))
    p = _write(tmp_path / "b.jsonl", ['{"id": "1", "image": "ok.png"}', '{"id": "2", "image": "nope.png"}'])
    with pytest.raises(InputError, match=r"b.jsonl:2: field 'image': image file not found"):
        load_images(str(p))
    p = _write(tmp_path / "c.jsonl", ['{"id": "1", "image": "ok.png"}', '{"id": "2", "image": "bad.png"}'])
    with pytest.raises(InputError, match=r"c.jsonl:2: field 'image': unreadable image"):
        load_images(str(p))


def test_image_folder_labels_and_sizes(samples):
    d = load_images(str(samples / "fashion"))
    assert d.images.shape == (50, 1, 28, 28) and d.has_labels and len(d.classes) == 10
    rgb = load_images(str(samples / "images.jsonl"), channels=3, size=40)
    assert rgb.images.shape == (50, 3, 40, 40)
    assert rgb.classes == d.classes and (rgb.labels >= 0).all()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "x").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    with pytest.raises(InputError, match="already exists; pass --force"), atomic_dir(out):
        pass


@pytest.mark.parametrize("content, needle", [
    ('{"id": "1", "image": "x.png"}\n{"id": "2", "image": ', "bad.jsonl:2: malformed JSON"),
    ('', "bad.jsonl: no records (empty data set)"),
    ('{"id": "1", "image": "missing.png"}\n', "bad.jsonl:1: field 'image': image file not found"),
])
def test_cli_bad_input_exits_2_with_one_line_and_no_output(tmp_path, cli, content, needle, samples):
    shutil.copy(next((samples / "fashion" / "bag").iterdir()), tmp_path / "x.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    r = cli("pretrain", "--data", bad, "--out", tmp_path / "run", "--epochs", "1")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    encoder = samples.parent / "tests" / "fixtures" / "prev_runs" / "byol_encoder"   # a real encoder: the JSONL is read
    r = cli("embed", encoder, "--input", bad, "--out", tmp_path / "emb")
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "emb").exists()


def test_cli_unknown_dataset_and_missing_folder(tmp_path, cli):
    r = cli("pretrain", "--data", tmp_path / "nope", "--out", tmp_path / "run")
    assert r.returncode == 2 and "nope: no such file or folder" in r.stderr
    r = cli("pretrain", "--data", "fashion-mnist:valid", "--out", tmp_path / "run")
    assert r.returncode == 2 and "unknown data set" in r.stderr


def test_fashion_mnist_offset_is_a_disjoint_validation_split():
    from cl_toolkit.io import read_builtin

    train = read_builtin("fashion-mnist:train?per_class=30&seed=0")
    val = read_builtin("fashion-mnist:train?per_class=30&seed=0&offset=30")
    more = read_builtin("fashion-mnist:train?per_class=60&seed=0")
    ids = lambda s: {r["id"] for r in s.records}  # noqa: E731
    assert len(ids(train)) == len(ids(val)) == 300 and not ids(train) & ids(val)
    assert ids(train) | ids(val) == ids(more)                  # the next 30 of each class's shuffled order
    assert sorted(r["label"] for r in val.records) == sorted(r["label"] for r in train.records)
    for bad in ("fashion-mnist:train?offset=5", "fashion-mnist:train?per_class=5&offset=-1"):
        with pytest.raises(InputError):
            read_builtin(bad)
