"""pd-lab entry point: `make lab` runs `streamlit run app.py`."""
import streamlit as st

from lab.i18n import LANGUAGES, t

st.set_page_config(page_title="pd-lab", layout="wide")
lang = st.sidebar.radio("Language / Язык", list(LANGUAGES), format_func=LANGUAGES.get, key="lang", horizontal=True)
st.sidebar.title(t(lang, "app_title"))
navigation = st.navigation([
    st.Page("pages/dashboard.py", title=t(lang, "dashboard"), default=True),
    st.Page("pages/playground.py", title=t(lang, "playground")),
])
navigation.run()
