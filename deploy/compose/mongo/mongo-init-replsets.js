// One-shot job of docker-compose.yml (service mongo-init-replsets), run with
// `mongosh --nodb /scripts/mongo-init-replsets.js`.
//
// Initiates the three replica sets of the sharded cluster and waits until each
// has a primary. Idempotent: a set that is already initiated (a restart on
// existing volumes) is left as it is, so `compose-up` can be run again.
//
// Member 0 of each set gets priority 2 so that, all being healthy, the same node
// is primary after every start: it makes logs and failover drills predictable.
// Any member can still win an election when it is gone.

const REPLICA_SETS = [
  {
    _id: "cfgrs",
    configsvr: true,
    members: ["mongo-cfg-1:27019", "mongo-cfg-2:27019", "mongo-cfg-3:27019"],
  },
  {
    _id: "shard1",
    members: ["mongo-shard1-1:27018", "mongo-shard1-2:27018", "mongo-shard1-3:27018"],
  },
  {
    _id: "shard2",
    members: ["mongo-shard2-1:27018", "mongo-shard2-2:27018", "mongo-shard2-3:27018"],
  },
];

const ALREADY_INITIALIZED = 23; // MongoDB error code AlreadyInitialized
const PRIMARY_WAIT_SECONDS = 120;

function initiate(set) {
  // directConnection: talk to this one member, not to a (not yet existing) set.
  const conn = connect(`mongodb://${set.members[0]}/admin?directConnection=true`);
  const config = {
    _id: set._id,
    members: set.members.map((host, i) => ({ _id: i, host: host, priority: i === 0 ? 2 : 1 })),
  };
  if (set.configsvr) {
    config.configsvr = true;
  }
  try {
    conn.adminCommand({ replSetInitiate: config });
    print(`${set._id}: initiated with ${set.members.join(", ")}`);
  } catch (err) {
    if (err.code !== ALREADY_INITIALIZED) {
      throw err;
    }
    print(`${set._id}: already initiated`);
  }
  for (let waited = 0; waited < PRIMARY_WAIT_SECONDS; waited++) {
    const hello = conn.adminCommand({ hello: 1 });
    if (hello.primary) {
      print(`${set._id}: primary is ${hello.primary}`);
      return;
    }
    sleep(1000);
  }
  throw new Error(`${set._id}: no primary after ${PRIMARY_WAIT_SECONDS}s`);
}

for (const set of REPLICA_SETS) {
  initiate(set);
}
