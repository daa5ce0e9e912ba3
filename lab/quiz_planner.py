"""Quiz questions the cluster planner answers: a model, GPUs, a workload and SLOs; colocated, chunked or
xPyD? The right option is whatever the planner computes for the scenario, and the explanation quotes
its goodput per GPU for the best placement of each kind, with a link to the planner filled in."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.cluster.topology import Mode

from .i18n import LANGUAGES, num, t
from .planner.hardware import GPUS, LINKS, MODELS
from .planner.scenario import SLO, Hardware, Workload
from .planner.search import TIE, plan
from .quiz import Question

MODES = (Mode.COLOCATED, Mode.CHUNKED, Mode.DISAGGREGATED)


@dataclass(frozen=True)
class Scenario:
    id: str
    model: str
    gpu: str
    link: str
    gpus: int
    prompt: int
    output: int
    ttft: float
    tpot: float

    @property
    def query(self) -> dict[str, str]:
        """The planner page's inputs for this scenario, as its URL's query parameters."""
        return {key: str(value) for key, value in asdict(self).items() if key != "id"}


SCENARIOS = (   # chosen so that each has a clear winner (tests/test_quiz_computed.py checks they still do)
    Scenario("plan-short-chat", "OPT-13B", "A100-80GB", "NVLink 3", 2, 128, 256, 1.0, 0.035),
    Scenario("plan-long-strict", "OPT-13B", "A100-80GB", "NVLink 3", 3, 2048, 64, 2.0, 0.03),
    Scenario("plan-slow-link", "OPT-13B", "A100-80GB", "TCP 10 GbE", 2, 2048, 64, 2.0, 0.03),
)


def best_by_mode(s: Scenario) -> dict[Mode, tuple[str, float]]:
    """The planner's best placement of each kind for the scenario: (label, goodput in req/s per GPU)."""
    results = plan(Hardware(MODELS[s.model], GPUS[s.gpu], LINKS[s.link]), Workload(1.0, s.prompt, s.output),
                   SLO(s.ttft, s.tpot), s.gpus)
    best: dict[Mode, tuple[str, float]] = {}
    for r in results:   # best first
        best.setdefault(r.placement.mode, (r.placement.label, r.per_gpu))
    return best


def winner(best: dict[Mode, tuple[str, float]]) -> Mode | None:
    """The kind with the highest goodput, or None when the runner-up is within the planner's tie margin."""
    ranked = sorted(best.items(), key=lambda kv: kv[1][1], reverse=True)
    if len(ranked) > 1 and ranked[0][1][1] <= (1 + TIE) * ranked[1][1][1]:
        return None
    return ranked[0][0]


def planner_question(s: Scenario, best: dict[Mode, tuple[str, float]]) -> Question:
    right = winner(best)
    if right is None:
        raise ValueError(f"scenario {s.id}: no clear winner ({best}); the quiz needs exactly one right answer")
    values = {"model": s.model, "gpus": s.gpus, "gpu": s.gpu, "link": s.link, "prompt": s.prompt,
              "output": s.output, "ttft": s.ttft, "tpot": s.tpot}
    options = [{"id": str(m), **{lang: t(lang, f"mode_{m}") for lang in LANGUAGES}} for m in MODES]
    explanation = {lang: t(lang, f"qp_why_{right}") + " " + t(lang, "qp_numbers", **{
        f"{m}_label": best[m][0] if m in best else "-" for m in MODES}, **{
        f"{m}_rps": num(lang, best[m][1], ".2f") if m in best else "-" for m in MODES}) for lang in LANGUAGES}
    text = {lang: t(lang, "qp_question", **values) for lang in LANGUAGES}
    return Question(s.id, "planner", "single", text, options, frozenset({str(right)}), explanation)
