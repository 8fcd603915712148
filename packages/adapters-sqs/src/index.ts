/**
 * @chunkwise/adapters-sqs: the chunkwise `QueueAdapter` on Amazon SQS, standard and FIFO.
 *
 * @since 0.1.0
 */
export * as SqsQueue from "./SqsQueue.js"
