"""Members: every checkpoint format and published source, read safely, behind one registry.

    registry.py               the ordered list of formats; dispatch (sniff, spec prefixes,
                              program kinds, architecture namespaces); imports no torch
    format.py                 what a format is (FileFormat, PublishedSource, Loaded) and the
                              shared path from a state dict to a network
    <one module per format>   e.g. torch_pickle.py, torchscript.py, timm_published.py: how it
                              is recognised, read safely, described; its registry line names it
    program_format.py         what the program formats (TorchScript, torch.export) share
    convention.py             input conventions: sidecars, embedded entries, their checks
    tensors.py                finding the weights in a loaded file, checking and hashing them
    inspection.py             Inspection / Member, inspect and load, checks across members,
                              against a protocol's views and against published figures

Nothing is imported here, so `modelpaths` can read the spec prefixes before torch is imported.
"""
