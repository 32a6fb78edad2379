"""product_svc: the catalog (categories, products, images) and stock reservations."""
