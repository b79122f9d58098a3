// Consumer-group flow with kafkajs for compat/test_group_flows.py.
//
// spec: bootstrap, topic, groupId, members (consumers in the group, default 1),
//   count (stop after this many records in all), settleMs (keep consuming this
//   long after count to catch extra deliveries), timeoutMs,
//   splitPartitions (optional: first wait until the members' assignments are
//   disjoint, non-empty and cover 0..n-1), produceAfterSplit (optional list of
//   {key, value} strings produced with kafkajs once that split is reached).
// Commits are manual: after each batch, the last processed offset + 1.
// Prints {split, assignments, records, committed}.
'use strict'
const { client, enc, runMain } = require('./common')

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function isSplit(assignments, n) {
  const seen = new Set()
  for (const a of assignments) {
    if (!a || a.length === 0) return false
    for (const p of a) {
      if (seen.has(p)) return false
      seen.add(p)
    }
  }
  if (seen.size !== n) return false
  for (let p = 0; p < n; p++) if (!seen.has(p)) return false
  return true
}

runMain(async spec => {
  const kafka = client(spec)
  const n = spec.members || 1
  const stopAt = Date.now() + (spec.timeoutMs || 30000)
  const assignments = new Array(n).fill(null)
  const records = []
  const failures = []
  const consumers = []
  for (let i = 0; i < n; i++) {
    const consumer = kafka.consumer({ groupId: spec.groupId, sessionTimeout: 6000, heartbeatInterval: 500, rebalanceTimeout: 10000, maxWaitTimeInMs: 100 })
    consumer.on(consumer.events.GROUP_JOIN, e => {
      assignments[i] = ((e.payload.memberAssignment || {})[spec.topic] || []).slice().sort((a, b) => a - b)
    })
    consumer.on(consumer.events.CRASH, e => failures.push(String(e.payload.error)))
    await consumer.connect()
    await consumer.subscribe({ topic: spec.topic, fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch, isRunning, isStale }) => {
        let next = null
        for (const m of batch.messages) {
          if (!isRunning() || isStale()) break
          const headers = Object.entries(m.headers || {}).map(([k, v]) => [k, enc(Array.isArray(v) ? v[0] : v)])
          records.push({ member: i, partition: batch.partition, offset: Number(m.offset), key: enc(m.key), value: enc(m.value), headers, timestamp: Number(m.timestamp) })
          next = (BigInt(m.offset) + 1n).toString()
        }
        if (next !== null) {
          await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }])
        }
      },
    })
    consumers.push(consumer)
  }

  let split = null
  if (spec.splitPartitions) {
    while (!isSplit(assignments, spec.splitPartitions)) {
      if (failures.length) throw new Error('consumer crashed: ' + failures.join('; '))
      if (Date.now() > stopAt) throw new Error('members did not split the partitions: ' + JSON.stringify(assignments))
      await sleep(50)
    }
    split = assignments.map(a => a.slice())
  }
  if (spec.produceAfterSplit) {
    const producer = kafka.producer()
    await producer.connect()
    await producer.send({ topic: spec.topic, acks: -1, messages: spec.produceAfterSplit.map(m => ({ key: m.key, value: m.value })) })
    await producer.disconnect()
  }

  while (records.length < spec.count && Date.now() < stopAt && !failures.length) await sleep(20)
  await sleep(spec.settleMs || 0)
  await Promise.all(consumers.map(c => c.disconnect()))
  if (failures.length) throw new Error('consumer crashed: ' + failures.join('; '))

  const admin = kafka.admin()
  await admin.connect()
  const offsets = await admin.fetchOffsets({ groupId: spec.groupId, topics: [spec.topic] })
  await admin.disconnect()
  const committed = {}
  for (const t of offsets) for (const p of t.partitions) committed[p.partition] = p.offset
  return { split, assignments, records, committed }
})
