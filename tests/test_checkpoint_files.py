"""condnet.checkpoint_files: atomic writes (their mode, the destination checked first),
safe loading with messages that tell a corrupt file from one that holds objects."""

import os
import pickle

import pytest
import torch

from condnet.checkpoint_files import (
    atomic_output,
    check_destination,
    load_checkpoint,
    read_state_dict,
    save_atomic,
    write_text_atomic,
)


def state(value):
    return {"meta": {"iteration": int(value)}, "state_dict": {"w": torch.full((64,), value)}}


def value_of(path):
    return load_checkpoint(path)["state_dict"]["w"][0].item()


def names(directory):
    return sorted(p.name for p in directory.iterdir())


def truncate_half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


# ---- save_atomic ----


def test_save_atomic_round_trip_and_fsync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = save_atomic(state(3.0), tmp_path / "a.pth")
    assert path == tmp_path / "a.pth"
    assert value_of(path) == 3.0
    assert len(synced) == 2  # the file, then the directory
    assert names(tmp_path) == ["a.pth"]


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "a.pth"
    save_atomic(state(1.0), path)
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(f.tell() // 2)
        f.truncate()
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomic(state(2.0), path)
    monkeypatch.undo()
    assert names(tmp_path) == ["a.pth"]
    assert value_of(path) == 1.0


def test_save_atomic_needs_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_atomic(state(1.0), tmp_path / "nope" / "a.pth")


# ---- load_checkpoint errors ----


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    path = save_atomic(state(1.0), tmp_path / "a.pth")
    truncate_half(path)
    with pytest.raises(ValueError, match="a.pth.*is truncated or not a checkpoint"):
        load_checkpoint(path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="is truncated or not a checkpoint"):
        load_checkpoint(junk)


class Pickled:  # an arbitrary object: weights_only must refuse it
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": {}, "obj": Pickled()}, path)
    with pytest.raises(ValueError, match="not a plain-tensor checkpoint.*Pickled"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pth"
    with open(plain, "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    with pytest.raises(ValueError, match="truncated or not a checkpoint"):
        load_checkpoint(plain)


def test_a_non_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(ValueError, match="holds a Tensor"):
        load_checkpoint(path)


# ---- what the atomic writers leave behind ----


def test_atomic_files_get_the_usual_mode(tmp_path, umask_022):
    # A temporary file from tempfile.mkstemp would be 0o600; a new file is 0o666 - umask.
    written = [
        save_atomic(state(1.0), tmp_path / "a.pth"),
        write_text_atomic("x = 1\n", tmp_path / "c.py"),
    ]
    with atomic_output(tmp_path / "e.onnx") as tmp:
        tmp.write_bytes(b"exported")
    written.append(tmp_path / "e.onnx")
    for path in written:
        assert os.stat(path).st_mode & 0o777 == umask_022, path
    assert names(tmp_path) == ["a.pth", "c.py", "e.onnx"]


def test_the_destination_is_checked_before_the_work(tmp_path):
    ran = []
    with pytest.raises(FileNotFoundError, match=r"the folder .*nope.* does not exist"):
        with atomic_output(tmp_path / "nope" / "out.pth"):
            ran.append(True)
    assert not ran
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_destination(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        check_destination(tmp_path / "file" / "out.pth")
    assert check_destination(tmp_path / "out.pth") == tmp_path / "out.pth"


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = write_text_atomic("old\n", tmp_path / "c.py")
    with pytest.raises(RuntimeError, match="exporter failed"):
        with atomic_output(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("exporter failed")
    assert path.read_text() == "old\n" and names(tmp_path) == ["c.py"]
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_output(tmp_path / "never.onnx"):
            pass
    assert names(tmp_path) == ["c.py"]


def test_corrupt_and_object_files_get_different_advice(tmp_path):
    path = save_atomic(state(1.0), tmp_path / "a.pth")
    truncate_half(path)
    with pytest.raises(ValueError) as corrupt:
        read_state_dict(path)
    assert "is truncated or not a checkpoint" in str(corrupt.value)
    assert "weights_only=False" not in str(corrupt.value)  # no advice to unpickle it
    objects = tmp_path / "obj.pth"
    torch.save({"state_dict": {}, "obj": Pickled()}, objects)
    with pytest.raises(ValueError, match="weights_only=False yourself") as refused:
        read_state_dict(objects)
    assert "truncated" not in str(refused.value)


def test_state_dicts_are_unwrapped_and_checked():
    w = torch.zeros(2)
    for given in ({"w": w}, {"state_dict": {"w": w}, "meta": {}}, {"module.w": w}):
        assert read_state_dict(given) == {"w": w}
    with pytest.raises(ValueError, match=r"checkpoint values must be tensors.*\['x'\]"):
        read_state_dict({"w": w, "x": 1})
    with pytest.raises(ValueError, match="holds no tensors"):
        read_state_dict({"state_dict": {}})
    with pytest.raises(TypeError, match="a checkpoint path or a state dict"):
        read_state_dict(3)
