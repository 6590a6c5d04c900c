"""The headline table (README and report.md summary): one row per dataset, the fastest method in bold."""

from taskspec.bench.headline import headline_table


def _row(tps, tau=1.0, speedup=None, prompts=3):
    return {"tokens_per_second": tps, "acceptance_length": tau, "speedup": speedup, "prompts": prompts}


def test_headline_rows_cells_and_fastest():
    result = {"meta": {"methods": ["none", "ngram", "routed"]},
              "summary": {"all": {"none": _row(20.0, 1.0, 1.0, 5), "ngram": _row(30.0, 2.0, 1.5, 5),
                                  "routed": _row(10.0, 1.3, 0.5, 5)},
                          "chat": {"none": _row(25.0, 1.0, 1.0, 2), "ngram": _row(20.0, 1.2, 0.8, 2),
                                   "routed": _row(12.5, 1.1, 0.5, 2)},
                          "math": {"none": _row(18.0, 1.0, 1.0, 3), "ngram": _row(36.0, 2.5, 2.0, 3),
                                   "routed": _row(9.0, 1.4, 0.5, 3)}}}
    lines = headline_table(result).splitlines()
    assert lines[0] == "| task | `none` | `ngram` | `routed` |"
    assert lines[2] == "| chat (2 prompts) | **25.0 tok/s** | τ 1.20, 0.80× | τ 1.10, 0.50× |"
    assert lines[4] == "| all (5 prompts) | 20.0 tok/s | **τ 2.00, 1.50×** | τ 1.30, 0.50× |"  # 'all' comes last


def test_one_dataset_has_no_separate_all_row():
    table = {"none": _row(20.0, 1.0, 1.0), "ngram": _row(30.0, 2.0, 1.5)}
    result = {"meta": {"methods": ["none", "ngram"]}, "summary": {"all": table, "gsm8k": table}}
    assert [line.split(" |")[0] for line in headline_table(result).splitlines()[2:]] == ["| gsm8k (3 prompts)"]
