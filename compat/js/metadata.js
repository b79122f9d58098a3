// Print the cluster and one topic's metadata as kafkajs's admin client sees it.
'use strict'
const { client, runMain } = require('./common')

runMain(async spec => {
  const admin = client(spec).admin()
  await admin.connect()
  try {
    const cluster = await admin.describeCluster()
    const topics = await admin.fetchTopicMetadata({ topics: [spec.topic] })
    const offsets = await admin.fetchTopicOffsets(spec.topic)
    return { cluster, topics: topics.topics, offsets }
  } finally {
    await admin.disconnect()
  }
})
