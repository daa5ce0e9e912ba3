import streamlit as st

from lab.i18n import t
from lab.quiz import load_questions, score
from lab.ui import lesson_results, page_frame

PAGE_TITLES = {"stages": "l1_title", "metrics": "l2_title", "chat": "l3_title", "problem": "l4_title",
               "fix": "l5_title", "travel": "l6_title", "lifetime": "l7_title", "summary": "l8_title"}
PAGE_FILES = {"stages": "pages/learn_1_stages.py", "metrics": "pages/learn_2_metrics.py",
              "chat": "pages/learn_3_chat.py", "problem": "pages/learn_4_problem.py", "fix": "pages/learn_5_fix.py",
              "travel": "pages/learn_6_travel.py", "lifetime": "pages/learn_7_lifetime.py",
              "summary": "pages/learn_8_summary.py"}

lang = page_frame("quiz")
questions = load_questions()
answers: dict = st.session_state.setdefault("quiz_answers", {})
st.caption(t(lang, "quiz_intro"))
st.metric(t(lang, "quiz_score", score=score(questions, answers), total=len(questions)), "")

for n, q in enumerate(questions, 1):
    with st.container(border=True):
        st.markdown(f"**{n}. {q.prompt(lang, lesson_results())}**")
        labels = {o["id"]: o[lang] for o in q.options}
        if q.kind == "single":
            choice = st.radio(q.prompt(lang, lesson_results()), list(labels), format_func=labels.get, key=f"q-{q.id}",
                              index=None, label_visibility="collapsed")
            chosen = {choice} if choice else set()
        else:
            st.caption(t(lang, "quiz_pick_all"))
            chosen = {oid for oid, label in labels.items() if st.checkbox(label, key=f"q-{q.id}-{oid}")}
        if st.button(t(lang, "quiz_check"), key=f"check-{q.id}", disabled=not chosen):
            answers[q.id] = chosen
        if q.id in answers:
            right = q.grade(answers[q.id])
            (st.success if right else st.error)(t(lang, "quiz_correct" if right else "quiz_wrong"))
            st.markdown(q.explanation[lang])
            st.page_link(PAGE_FILES[q.page], label=t(lang, "quiz_see", page=t(lang, PAGE_TITLES[q.page])))

if st.button(t(lang, "quiz_retry"), key="retry"):
    answers.clear()
    for key in [k for k in st.session_state if str(k).startswith(("q-", "check-"))]:
        del st.session_state[key]
    st.rerun()
