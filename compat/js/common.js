// Shared helpers for the kafkajs scripts that kbroker's compat tests run.
// Every script reads one JSON spec (file path in argv[2]) and prints one JSON
// document on stdout; bytes travel as base64 so any key or value survives.
'use strict'
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1'
const fs = require('fs')
const { Kafka, logLevel, CompressionTypes } = require('kafkajs')

function readSpec() {
  return JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
}

function client(spec) {
  return new Kafka({
    clientId: spec.clientId || 'kbroker-compat-js',
    brokers: spec.bootstrap.split(','),
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 20000,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
  })
}

const b64 = s => (s == null ? null : Buffer.from(s, 'base64'))
const enc = b => (b == null ? null : Buffer.from(b).toString('base64'))

function compression(name) {
  if (!name) return CompressionTypes.None
  const c = { gzip: CompressionTypes.GZIP, none: CompressionTypes.None }[name]
  if (c === undefined) throw new Error('kafkajs ships only gzip; asked for ' + name)
  return c
}

// Run main(); print its result as JSON; exit non-zero (with the error on stderr)
// on failure, and in any case before the spec's deadline.
function runMain(main) {
  const spec = readSpec()
  const limit = setTimeout(() => {
    console.error('kafkajs script: deadline of ' + (spec.deadlineMs || 60000) + ' ms reached')
    process.exit(3)
  }, spec.deadlineMs || 60000)
  main(spec).then(
    out => {
      process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0))
      clearTimeout(limit)
    },
    err => {
      console.error('kafkajs script failed: ' + (err && err.stack ? err.stack : err))
      if (err && err.type) console.error('kafka error type: ' + err.type)
      process.exit(1)
    })
}

module.exports = { client, b64, enc, compression, runMain }
