// Read every partition of spec.topic from offset 0, WITHOUT a consumer group:
// kafkajs only exposes group consumers, so this drives the client's own
// cluster and broker objects (its metadata, connection and Fetch code) and
// assigns partitions by hand.  Stops at spec.count records or the deadline.
'use strict'
const { client, enc, runMain } = require('./common')

function clusterOf(kafka) {
  const sym = Object.getOwnPropertySymbols(kafka).find(s => String(s).includes('createCluster'))
  return kafka[sym]({ allowAutoTopicCreation: false })
}

runMain(async spec => {
  const cluster = clusterOf(client(spec))
  await cluster.connect()
  await cluster.addTargetTopic(spec.topic)
  await cluster.refreshMetadata()
  const partitions = cluster.findTopicPartitionMetadata(spec.topic)
  const next = new Map(partitions.map(p => [p.partitionId, '0']))
  const out = []
  const stopAt = Date.now() + (spec.timeoutMs || 30000)
  try {
    while (out.length < spec.count && Date.now() < stopAt) {
      for (const p of partitions) {
        const broker = await cluster.findBroker({ nodeId: String(p.leader) })
        const resp = await broker.fetch({
          replicaId: -1,
          isolationLevel: 1,
          maxWaitTime: 200,
          minBytes: 1,
          maxBytes: 10485760,
          topics: [{ topic: spec.topic, partitions: [{ partition: p.partitionId, fetchOffset: next.get(p.partitionId), maxBytes: 1048576 }] }],
        })
        for (const t of resp.responses) {
          for (const pd of t.partitions) {
            if (pd.errorCode) throw new Error('fetch error ' + pd.errorCode + ' on partition ' + pd.partition)
            for (const m of pd.messages) {
              if (BigInt(m.offset) < BigInt(next.get(pd.partition))) continue // batch started earlier
              if (m.isControlRecord) continue
              const headers = Object.entries(m.headers || {}).map(([k, v]) => [k, enc(Array.isArray(v) ? v[0] : v)])
              out.push({ partition: pd.partition, offset: Number(m.offset), key: enc(m.key), value: enc(m.value), headers, timestamp: Number(m.timestamp) })
              next.set(pd.partition, (BigInt(m.offset) + 1n).toString())
            }
          }
        }
      }
    }
  } finally {
    await cluster.disconnect()
  }
  return out
})
