// MongoDB first-start init (docker-entrypoint-initdb.d, run as the root user): product_svc's own
// user, allowed to read and write its database shop_product and nothing else.  Its password is
// PRODUCT_SVC_MONGO_PASSWORD (x-local-dev-only: a local development default, see
// docker-compose.yml).  Runs only when the data volume is empty.
db.getSiblingDB("admin").createUser({
  user: "product_svc",
  pwd: process.env.PRODUCT_SVC_MONGO_PASSWORD,
  roles: [{ role: "readWrite", db: "shop_product" }],
});
