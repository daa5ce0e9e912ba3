import streamlit as st

from lab.i18n import t
from lab.quiz import Question, decode_answers, encode_answers, load_questions, score
from lab.quiz_measured import learner_figures, measured_questions
from lab.quiz_planner import SCENARIOS, best_by_mode, planner_question
from lab.ui import lesson_results, page_frame, page_link

PAGE_TITLES = {"stages": "l1_title", "metrics": "l2_title", "chat": "l3_title", "problem": "l4_title",
               "fix": "l5_title", "travel": "l6_title", "lifetime": "l7_title", "summary": "l8_title",
               "planner": "plan_title"}
PAGE_FILES = {"stages": "pages/learn_1_stages.py", "metrics": "pages/learn_2_metrics.py",
              "chat": "pages/learn_3_chat.py", "problem": "pages/learn_4_problem.py", "fix": "pages/learn_5_fix.py",
              "travel": "pages/learn_6_travel.py", "lifetime": "pages/learn_7_lifetime.py",
              "summary": "pages/learn_8_summary.py", "planner": "pages/planner.py"}


@st.cache_data(show_spinner=False)
def planner_answers() -> list[dict]:
    """The planner's verdict on each scenario: the same for every learner, so computed once per server."""
    return [best_by_mode(s) for s in SCENARIOS]


lang = page_frame("quiz")
fixed = load_questions()
measured = measured_questions(learner_figures(lesson_results()))
with st.spinner(t(lang, "quiz_planning")):
    planned = [planner_question(s, best) for s, best in zip(SCENARIOS, planner_answers())]
questions = fixed + measured + planned
# Answers live in the session and in the page's URL, so a reload of the page keeps them.
answers: dict = st.session_state.setdefault("quiz_answers", decode_answers(st.query_params.get("answers", "")))
st.caption(t(lang, "quiz_intro"))
top_score = st.empty()   # filled in at the end: a Check pressed below changes the score in this run


def ask(n: int, q: Question) -> None:
    with st.container(border=True):
        prompt = q.prompt(lang, lesson_results())
        st.markdown(f"**{n}. {prompt}**")
        labels = {o["id"]: o[lang] for o in q.options}
        if q.kind == "single":
            kept = next(iter(answers.get(q.id, ())), None)
            # Keyed per language: its labels change with it (pages/dashboard.py says why)
            choice = st.radio(prompt, list(labels), format_func=labels.get, key=f"q-{q.id}-{lang}",
                              index=list(labels).index(kept) if kept in labels else None, label_visibility="collapsed")
            chosen = {choice} if choice else set()
        else:
            st.caption(t(lang, "quiz_pick_all"))
            chosen = {oid for oid, label in labels.items()
                      if st.checkbox(label, value=oid in answers.get(q.id, ()), key=f"q-{q.id}-{oid}")}
        if st.button(t(lang, "quiz_check"), key=f"check-{q.id}", disabled=not chosen):
            answers[q.id] = chosen
            st.query_params["answers"] = encode_answers(answers)
        if q.id in answers:
            right = q.grade(answers[q.id])
            (st.success if right else st.error)(t(lang, "quiz_correct" if right else "quiz_wrong"))
            st.markdown(q.explanation[lang])
            page_link(st, PAGE_FILES[q.page], t(lang, "quiz_see", page=t(lang, PAGE_TITLES[q.page])), lang)
        if q.page == "planner":
            scenario = next(s for s in SCENARIOS if s.id == q.id)
            page_link(st, PAGE_FILES["planner"], t(lang, "qp_open"), lang, scenario.query)


for n, q in enumerate(fixed, 1):
    ask(n, q)
st.subheader(t(lang, "quiz_measured_intro"))
for n, q in enumerate(measured, len(fixed) + 1):
    ask(n, q)
st.subheader(t(lang, "quiz_planner_intro"))
for n, q in enumerate(planned, len(fixed) + len(measured) + 1):
    ask(n, q)

# The score, where the learner finishes: large, with how many are right, wrong and still open.
right, total = score(questions, answers), len(questions)
answered = sum(q.id in answers for q in questions)
top_score.metric(t(lang, "quiz_score", score=right, total=total), "")
st.subheader(t(lang, "quiz_final"))
with st.container(border=True):
    c1, c2 = st.columns([1, 3], vertical_alignment="center")
    c1.metric(t(lang, "quiz_final_label"), f"{right} / {total}")
    c2.progress(right / total, text=t(lang, "quiz_final_text", right=right, wrong=answered - right,
                                     left=total - answered))

st.subheader(t(lang, "quiz_review"))
wrong = [(n, q) for n, q in enumerate(questions, 1) if q.id in answers and not q.grade(answers[q.id])]
for n, q in wrong:
    page_link(st, PAGE_FILES[q.page], f"{n}. {q.prompt(lang, lesson_results())[:90]}… → "
              + t(lang, PAGE_TITLES[q.page]), lang)
if not wrong:
    st.caption(t(lang, "quiz_review_none"))

if st.button(t(lang, "quiz_retry"), key="retry"):
    answers.clear()
    st.query_params.pop("answers", None)
    for key in [k for k in st.session_state if str(k).startswith(("q-", "check-"))]:
        del st.session_state[key]
    st.rerun()
