"""Proposals files for ``infer`` on person models: JSON, AVA CSV, MMAction2 pickles (numpy only), bad files."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from agent.offline.proposals import ProposalsError, read_proposals


def test_json_boxes_by_time_best_first(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"time": 1, "boxes": [[0.1, 0.1, 0.4, 0.9, 0.5], [0.5, 0.1, 0.9, 0.9, 0.8]]}]))
    got = read_proposals(path)
    assert list(got) == [1.0]
    assert got[1.0] == [((0.5, 0.1, 0.9, 0.9), 0.8), ((0.1, 0.1, 0.4, 0.9), 0.5)]


def test_ava_csv_counts_a_box_once_per_time(tmp_path):
    path = tmp_path / "ava.csv"
    path.write_text(
        "vid,0902,0.077,0.151,0.283,0.811,80,1\n"
        "vid,0902,0.077,0.151,0.283,0.811,12,1\n"  # same person, another action
        "vid,0902,0.332,0.194,0.481,0.891,17,2\n"
        "vid,0903,0.077,0.151,0.283,0.811,80,1\n"
    )
    got = read_proposals(path)
    assert {t: len(b) for t, b in got.items()} == {902.0: 2, 903.0: 1}


def test_several_videos_need_a_video_id(tmp_path):
    path = tmp_path / "ava.csv"
    path.write_text("a,1,0.1,0.1,0.2,0.2\nb,1,0.3,0.3,0.4,0.4\n")
    with pytest.raises(ProposalsError, match=r"ava\.csv: holds several videos .*--video-id"):
        read_proposals(path)
    assert read_proposals(path, "b") == {1.0: [((0.3, 0.3, 0.4, 0.4), 1.0)]}
    with pytest.raises(ProposalsError, match="no proposals for video id 'c'"):
        read_proposals(path, "c")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_mmaction2_pickle(tmp_path, protocol):
    path = tmp_path / "proposals.pkl"
    data = {"vid,0902": np.float32([[0.1, 0.1, 0.5, 0.9, 0.99], [0.5, 0.2, 0.8, 0.9, 0.4]])}
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    got = read_proposals(path, min_score=0.5)
    assert [score for _, score in got[902.0]] == pytest.approx([0.99])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_with_code_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"vid,1": _Exploit()}))
    with pytest.raises(ProposalsError, match=r"evil\.pkl: .*refusing to load posix\.system"):
        read_proposals(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.json", "{", r"p\.json: not readable JSON"),
        ("p.json", '{"time": 1}', r"p\.json: expected a list"),
        ("p.json", '[{"time": "x", "boxes": []}]', r"p\.json: \[0\]\.time: expected a number"),
        ("p.json", '[{"time": 1, "boxes": [[0.1, 0.2]]}]', r"p\.json: \[0\]\.boxes\[0\]: expected 4 or 5"),
        ("p.json", '[{"time": 1, "boxes": [[0.5, 0.1, 0.2, 0.9]]}]', r"\[0\]\.boxes\[0\]: box .* is not x1 < x2"),
        ("p.json", "[]", r"p\.json: no boxes"),
        ("p.csv", "vid,1,0.1,0.1\n", r"p\.csv: line 1: expected video_id, timestamp"),
        ("p.csv", "vid,x,0.1,0.1,0.2,0.2\n", r"p\.csv: line 1: timestamp 'x' is not a number"),
        ("p.csv", "vid,1,0.1,0.1,1.5,0.2\n", r"p\.csv: line 1: box .* within \[0, 1\]"),
        ("p.pkl", "not a pickle", r"p\.pkl: not an MMAction2 proposals pickle"),
        ("p.txt", "", r"p\.txt: unknown proposals format '\.txt'"),
    ],
)
def test_bad_files_are_named_with_the_place(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ProposalsError, match=message):
        read_proposals(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProposalsError, match=r"nope\.json: proposals file not found"):
        read_proposals(tmp_path / "nope.json")
