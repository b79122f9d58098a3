// Produce spec.messages in order and print [{partition, offset}] per message.
// Partitions are chosen with kafkajs's own default partitioner up front, so a
// batch of messages can go in one send() and each message's offset is still
// known: baseOffset of its partition plus its rank in that partition's batch.
'use strict'
const { Partitioners } = require('kafkajs')
const { client, b64, compression, runMain } = require('./common')

const BATCH = 100

runMain(async spec => {
  const kafka = client(spec)
  const admin = kafka.admin()
  await admin.connect()
  const md = await admin.fetchTopicMetadata({ topics: [spec.topic] })
  await admin.disconnect()
  const partitionMetadata = md.topics[0].partitions
  const partitioner = Partitioners.DefaultPartitioner()
  const producer = kafka.producer({ allowAutoTopicCreation: false, createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  const acks = spec.acks === undefined ? -1 : spec.acks
  const out = []
  try {
    for (let start = 0; start < spec.messages.length; start += BATCH) {
      const batch = spec.messages.slice(start, start + BATCH).map(m => {
        const headers = {}
        for (const [k, v] of m.headers || []) headers[k] = b64(v)
        const message = { key: b64(m.key), value: b64(m.value), headers }
        message.partition = partitioner({ topic: spec.topic, partitionMetadata, message })
        return message
      })
      const res = await producer.send({ topic: spec.topic, acks, compression: compression(spec.compression), messages: batch })
      const base = new Map(res.map(r => [r.partition, Number(r.baseOffset)]))
      const rank = new Map()
      for (const m of batch) {
        const n = rank.get(m.partition) || 0
        rank.set(m.partition, n + 1)
        out.push({ partition: m.partition, offset: acks === 0 ? -1 : base.get(m.partition) + n })
      }
    }
  } finally {
    await producer.disconnect()
  }
  return out
})
