// One-shot job of docker-compose.yml (service mongo-init-shards), run with
// `mongosh --nodb /scripts/mongo-init-shards.js` once mongos is healthy.
//
// Adds the two shard replica sets to the cluster. Idempotent: shards that are
// already members are skipped. Enabling sharding on the database and sharding
// the collections (messages on {receiver_id: "hashed"}) is done afterwards by
// the project's own bootstrap (`python -m libs.bootstrap`), which owns the
// collections, their indexes and their shard keys.

const SHARDS = [
  { name: "shard1", hosts: ["mongo-shard1-1:27018", "mongo-shard1-2:27018", "mongo-shard1-3:27018"] },
  { name: "shard2", hosts: ["mongo-shard2-1:27018", "mongo-shard2-2:27018", "mongo-shard2-3:27018"] },
];

const mongos = connect("mongodb://mongos:27017/admin");
const present = mongos.adminCommand({ listShards: 1 }).shards.map((s) => s._id);

for (const shard of SHARDS) {
  if (present.includes(shard.name)) {
    print(`${shard.name}: already in the cluster`);
    continue;
  }
  // "<replica set>/<seed list>": mongos discovers the rest of the set.
  mongos.adminCommand({ addShard: `${shard.name}/${shard.hosts.join(",")}`, name: shard.name });
  print(`${shard.name}: added`);
}

const shards = mongos.adminCommand({ listShards: 1 }).shards;
print(`cluster shards: ${shards.map((s) => `${s._id}=${s.host}`).join("; ")}`);
if (shards.length < SHARDS.length) {
  throw new Error(`expected ${SHARDS.length} shards, the cluster has ${shards.length}`);
}
