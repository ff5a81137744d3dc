"""The launch buttons' repository URL comes from one setting, never a placeholder."""
import subprocess

from softlib.book import runner as book


def test_repository_url_from_the_setting_or_the_git_remote(monkeypatch):
    monkeypatch.setenv("SOFTLIB_REPOSITORY_URL", "https://example.org/me/softlib/")
    assert book.repository_url() == "https://example.org/me/softlib"
    monkeypatch.setenv("SOFTLIB_REPOSITORY_URL", "")
    assert book.repository_url() is None

    monkeypatch.delenv("SOFTLIB_REPOSITORY_URL")

    class Out:
        def __init__(self, url):
            self.stdout, self.returncode = url, 0

    for remote, want in [("git@github.com:owner/repo.git", "https://github.com/owner/repo"),
                         ("https://github.com/owner/repo.git", "https://github.com/owner/repo"),
                         ("ssh://git@gitlab.com/group/repo", "https://gitlab.com/group/repo"),
                         ("/local/path/repo", None)]:
        monkeypatch.setattr(subprocess, "run", lambda *a, _u=remote, **k: Out(_u + "\n"))
        assert book.repository_url() == want, remote


def test_effective_config_sets_or_drops_the_buttons():
    cfg = book.effective_config("https://github.com/owner/repo")
    assert cfg["repository"]["url"] == "https://github.com/owner/repo"
    assert cfg["html"]["use_repository_button"] and "launch_buttons" in cfg
    bare = book.effective_config(None)
    assert "repository" not in bare and "launch_buttons" not in bare
    assert not bare["html"]["use_repository_button"]
    text = (book.REPO / "_config.yml").read_text()
    assert "github.com/softlib/softlib" not in text  # no placeholder ships


def test_how_to_compute_keeps_section_4_with_the_models_it_attacks():
    """Section 4 needs section 3's weights, which bundles do not carry: the commands a page of a
    missing section gives compute and export both together."""
    from softlib.book import runner as R
    assert R.with_weight_sources(["adversarial"]) == ["alternatives", "adversarial"]
    assert R.with_weight_sources(["calibration_ood", "generalisation"]) == [
        "generalisation", "calibration_ood"]
    text = R._how_to_compute("gpu", ["adversarial"])
    assert "--sections alternatives,adversarial --budget-seconds" in text
    assert ("export --profile gpu --sections alternatives,adversarial --builds-on results/gpu "
            "--max-mib 4 results/gpu/alternatives-adversarial-$(date -u +%Y%m%dT%H%M).tar.gz") in text
    assert "do not carry" in text
    assert "do not carry" not in R._how_to_compute("gpu", ["calibration_ood"])


def test_the_book_leaves_out_hidden_folders(tmp_path):
    """Hidden, git-ignored folders of the checkout (the data mirror copied in for a lent GPU
    machine, the device's cache) hold Markdown files that must not become pages: they broke the
    warnings-as-errors build once they existed."""
    from sphinx.project import Project
    files = ["intro.md", "book/compute.md", ".device_data/README.md", ".device_carry/notes.md",
             ".cache/device/data/imagenet_real/timm_results_README.md", "book/.scratch/x.md",
             "tests/x.md", "README.md"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("# page\n")
    patterns = book.effective_config(None)["exclude_patterns"]
    found = Project(str(tmp_path), {".md": "markdown"}).discover(exclude_paths=patterns)
    assert sorted(found) == ["book/compute", "intro"]


def test_progress_line_lists_groups_only_where_they_differ():
    """The terminal's one line per not-computed section: a stage whose groups are equally far
    is summed up; one with some groups done, others not, is listed group by group."""
    from softlib.book.runner import _progress_line

    def row(stage, group, done, jobs, waiting=0):
        return dict(section="s", stage=stage, group=group, done=done, jobs=jobs,
                    provisional=waiting)
    assert _progress_line([row("train", "laing/basic", 21, 21), row("train", "laing/sngp", 0, 21),
                           row("eval", None, 45, 105, 60)]) == (
        "train laing/basic 21/21; train laing/sngp 0/21; "
        "eval 45/105 (60 wait for the stage before)")
    assert _progress_line([row("pretrain", None, 0, 2)]
                          + [row("finetune", f"f/{i}", 0, 10, 10) for i in range(14)]) == (
        "pretrain 0/2; finetune 0/140 in 14 groups (140 wait for the stage before)")
    assert _progress_line([row("train", "g/a", 3, 10), row("train", "g/b", 3, 10)]) == (
        "train g/a 3/10; train g/b 3/10")


def test_a_not_computed_pages_table_estimates_what_is_left_group_by_group():
    """The table of a not-computed page: each group's cached jobs and, where the plan could
    cost them, the device time of the rest, with the section's total."""
    from softlib.book.runner import _duration, _progress_table

    def row(group, done, jobs, seconds=None):
        r = dict(section="s", stage="train", group=group, done=done, jobs=jobs, provisional=0)
        if seconds is not None:
            r.update(seconds_to_do=seconds, device="NVIDIA H200")
        return r
    assert [_duration(s) for s in (0, 30, 61, 1500, 5399, 5400, 9000)] == [
        "none", "< 1 min", "1 min", "25 min", "90 min", "1.5 h", "2.5 h"]
    plain = _progress_table([row("laing/basic", 21, 21), row("laing/sngp", 0, 21)])
    assert "| laing/sngp | 0 of 21 |\n" in plain and "estimate" not in plain
    assert "in all" not in plain
    timed = _progress_table([row("laing/basic", 21, 21, 0.0), row("laing/sngp", 0, 21, 190.0)])
    assert "on one H200, estimated from the speeds recorded" in timed
    assert "| laing/basic | 21 of 21 | none |" in timed
    assert "| laing/sngp | 0 of 21 | 3 min |" in timed
    assert "| | **in all** | 21 of 42 | **3 min** |" in timed
    one = _progress_table([row("laing/sngp", 0, 21, 190.0)])
    assert "in all" not in one and "| 3 min |" in one


def test_compute_runs_sections_in_the_order_asked(monkeypatch):
    """A budgeted slice of several sections finishes the first before it starts the next
    (section 3 still before section 4, which attacks its models)."""
    from softlib.book import runner as R
    assert R.compute_order(["calibration_ood", "generalisation"]) == [
        "calibration_ood", "generalisation"]
    assert R.compute_order(["adversarial", "calibration_ood", "alternatives"]) == [
        "alternatives", "adversarial", "calibration_ood"]
    assert R.compute_order(["adversarial"]) == ["adversarial"]
    ran = []

    def fake(profile, section, *a, **kw):
        ran.append(section)
        return {"stopped": None, "seconds": 0.0, "error": None, "partial": False,
                "complete": True, "trained": 0, "hits": 0, "entries": 0}
    monkeypatch.setattr(R, "_compute_one", fake)
    monkeypatch.setenv("SOFTLIB_QUIET", "1")
    state = R.compute_sections("smoke", ["calibration_ood", "generalisation"], device="cpu")
    assert ran == ["calibration_ood", "generalisation"] == list(state)


def test_the_intro_lists_every_profile():
    """The intro's profile table is prose, kept by hand: a profile added to ``softlib.book.profiles``
    (as ``gpu`` was) must get its row, and a row must not outlive its profile."""
    import re

    from softlib.book.profiles import profile_names
    text = (book.REPO / "book" / "intro.md").read_text()
    table = text.split("## Profiles", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.M)
    assert sorted(rows) == sorted(profile_names())
