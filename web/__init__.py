"""The storefront and admin pages: a browser front end that is a client of the edge's REST API only."""
