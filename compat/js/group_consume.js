// Consume spec.count records with a kafkajs consumer group (subscribe, commit)
// and print them; used by the group tests only.
'use strict'
const { client, enc, runMain } = require('./common')

runMain(async spec => {
  const consumer = client(spec).consumer({ groupId: spec.groupId, sessionTimeout: 10000, heartbeatInterval: 1000, rebalanceTimeout: 10000 })
  await consumer.connect()
  await consumer.subscribe({ topic: spec.topic, fromBeginning: true })
  const out = []
  await new Promise((resolve, reject) => {
    const stopAt = setTimeout(resolve, spec.timeoutMs || 30000)
    consumer.run({
      autoCommit: true,
      eachMessage: async ({ partition, message }) => {
        const headers = Object.entries(message.headers || {}).map(([k, v]) => [k, enc(Array.isArray(v) ? v[0] : v)])
        out.push({ partition, offset: Number(message.offset), key: enc(message.key), value: enc(message.value), headers, timestamp: Number(message.timestamp) })
        if (out.length >= spec.count) { clearTimeout(stopAt); resolve() }
      },
    }).catch(reject)
  })
  await consumer.disconnect()
  return out
})
