"""Files: safe npz and JSON records written atomically, and the seed's ``OutputLoader``.

============================  ==============================================================
:mod:`nsp.io.files`           ``save_npz``/``load_npz``, ``save_json``/``load_json``: safe
                              files (no pickle), written atomically
:mod:`nsp.io.storage`         the record store (one writer per directory); also exports
                              the functions of ``nsp.io.files``
:mod:`nsp.io.outputloader`    ``OutputLoader``: the seed's loader of saved results
============================  ==============================================================
"""
