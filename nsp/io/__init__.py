"""Files: safe npz and JSON records written atomically, and the seed's ``OutputLoader``.

============================  ==============================================================
:mod:`nsp.io.storage`         ``save_npz``/``load_npz``, ``save_json``/``load_json``, the
                              record store (one writer per directory, atomic renames)
:mod:`nsp.io.outputloader`    ``OutputLoader``: the seed's loader of saved results
============================  ==============================================================
"""
