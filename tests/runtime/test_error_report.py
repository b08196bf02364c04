"""One message per job: the first rank to report an error prints it, the others learn its code.

The command-line view (torchrun, an error on one rank only) is in tests/test_cli_errors.py.
"""

from __future__ import annotations

from megatron_dlm.testing import run_distributed
from tests.runtime.workers import report_the_same_error


def test_an_error_every_rank_hits_is_printed_once_and_its_code_shared():
    results = run_distributed(report_the_same_error, 2)
    printed = [p for p, _, _ in results]
    assert sorted(printed) == [False, True]
    assert [before for _, before, _ in results] == [None, None]
    assert [after for _, _, after in results] == [2, 2]


def test_without_a_launcher_or_process_group_rank_zero_prints(monkeypatch, capsys):
    from megatron_dlm.runtime.error_report import exit_code_reported, report_error

    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setenv("RANK", "1")
    assert not report_error("tool: error: x", 2)
    monkeypatch.setenv("RANK", "0")
    assert report_error("tool: error: x", 2)
    assert capsys.readouterr().err == "tool: error: x\n"
    assert exit_code_reported(wait_s=0) is None
