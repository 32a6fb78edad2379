"""The catalog's rules, plain Python with no I/O, one module per concept:

:mod:`.text`          free-text checks, the normalized forms names sort and search by
:mod:`.categories`    the category tree
:mod:`.products`      product fields: validation, prices, field-mask updates, batch ids
:mod:`.images`        image sniffing, file names, object keys
:mod:`.listing`       listing filters, sort orders and page positions
:mod:`.reservations`  the stock reservation state machine

Failures are :mod:`common.errors` exceptions; invalid input is collected into one
``InvalidArgumentError`` with a field violation per bad field (reason VALIDATION_FAILED).
"""
