"""The book machinery, apart from the science library: profiles, the section header, the
sections' compute functions, the job plan and its Ray backend, result bundles, the claims
ledger, the compute page and the runner (``python -m softlib.book``, :mod:`.runner`).

The science library (``softlib.data``, ``models``, ``losses``, ``metrics``, ``attacks``,
``train``, ``studies``) never imports from here.
"""
