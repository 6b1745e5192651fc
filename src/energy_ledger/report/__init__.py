"""The HTML report: one page per experiment and a comparison page per root (docs/report.md).

``digest`` and ``model`` are pure (what a page shows); ``figures`` draws with matplotlib,
``html`` lays the pages out with jinja2, and ``build`` reads the root and writes the pages.
matplotlib and jinja2 come with the ``report`` extra (``extra`` checks for them).
"""
