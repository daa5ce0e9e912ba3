"""pd-lab entry point: `make lab` runs `streamlit run app.py`. Each page draws its own frame
(language, page config: lab.ui.page_frame); this file only builds the navigation."""
import streamlit as st

from lab.i18n import t
from lab.ui import current_language

LESSONS = ["learn_1_stages", "learn_2_metrics", "learn_3_chat", "learn_4_problem", "learn_5_fix", "learn_6_travel",
           "learn_7_lifetime", "learn_8_summary"]

lang = current_language()
navigation = st.navigation({
    t(lang, "dashboard"): [
        st.Page("pages/dashboard.py", title=t(lang, "dashboard"), default=True),
        st.Page("pages/playground.py", title=t(lang, "playground")),
    ],
    t(lang, "learn"): [st.Page(f"pages/{name}.py", title=t(lang, f"l{i}_title")) for i, name in enumerate(LESSONS, 1)]
    + [st.Page("pages/quiz.py", title=t(lang, "quiz")), st.Page("pages/planner.py", title=t(lang, "plan_title"))],
})
navigation.run()
