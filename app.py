"""pd-lab entry point: `make lab` runs `streamlit run app.py`. Each page draws its own frame
(language, menu, page config: lab.ui.page_frame); this file only routes to the pages."""
from lab.ui import navigation

navigation().run()
