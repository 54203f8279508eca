"""Small shared utilities with no dependencies inside ``nar_plugin`` except ``errors``.

One of each: :mod:`.io` (atomic writes, versioned JSON), :mod:`.deps` (optional imports),
:mod:`.progress` (progress display), :mod:`.torch_context` (torch threads and seeds).
"""
